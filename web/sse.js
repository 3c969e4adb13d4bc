// Reads an event stream with fetch, for the dashboard's topic tail and the
// inspector: unlike EventSource, it sees events of every type (EventSource
// hands out only the types one listens for by name), and a refused stream's
// HTTP status and error message.
"use strict";

// Calls onEvent({id, type, data}) for each event of `response`'s body until
// it ends. Comments are skipped; an event with no data line is not
// dispatched, as the SSE standard says.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // A CR at the end may be the first half of a CRLF: wait for the rest.
    const held = buffer.endsWith("\r") ? 1 : 0;
    let text = buffer.slice(0, buffer.length - held).replace(/\r\n?/g, "\n");
    let end;
    while ((end = text.indexOf("\n\n")) >= 0) {
      const event = parseBlock(text.slice(0, end));
      text = text.slice(end + 2);
      if (event) onEvent(event);
    }
    buffer = text + buffer.slice(buffer.length - held);
  }
}

function parseBlock(block) {
  const event = { id: "", type: "message", data: [] };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    let value = at < 0 ? "" : line.slice(at + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") event.data.push(value);
    else if (field === "event") event.type = value;
    else if (field === "id") event.id = value;
  }
  if (!event.data.length) return null;
  event.data = event.data.join("\n");
  return event;
}

// "401 invalid_token: the token has expired" from a refused response: the
// JSON error's code and message when there is one, else the body's text.
async function refusal(response) {
  const text = await response.text().catch(() => "");
  try {
    const { error } = JSON.parse(text);
    if (error && error.message) return `${response.status} ${error.code}: ${error.message}`;
  } catch { /* not JSON */ }
  return `${response.status} ${text.trim().slice(0, 300) || response.statusText}`;
}
