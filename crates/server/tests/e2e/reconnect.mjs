// A browser-like subscriber for herald-server's end-to-end test.
//
// Usage: node reconnect.mjs URL LAST_DATA
//
// Connects with the `eventsource` package (the WHATWG EventSource that
// browsers implement: it reconnects by itself and sends Last-Event-ID), and
// prints one JSON line per happening on stdout:
//   {"type":"open"}                       the connection opened (again)
//   {"type":"message","id":…,"data":…}    an event arrived
//   {"type":"error"}                      the connection dropped (it retries)
//   {"type":"gap","data":…}               a herald.gap notice arrived
// It exits 0 once it has received the event whose data is LAST_DATA.
import { EventSource } from "eventsource";

const [url, last] = process.argv.slice(2);
if (!url || last === undefined) {
  console.error("usage: node reconnect.mjs URL LAST_DATA");
  process.exit(2);
}

const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const source = new EventSource(url);
source.onopen = () => print({ type: "open" });
source.onerror = () => print({ type: "error" });
source.addEventListener("herald.gap", (event) => print({ type: "gap", data: event.data }));
source.onmessage = (event) => {
  print({ type: "message", id: event.lastEventId, data: event.data });
  if (event.data === last) {
    source.close();
    process.exit(0);
  }
};
