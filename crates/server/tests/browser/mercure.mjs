// Drives Debian's headless Chromium to subscribe to Herald's Mercure door
// with the browser's own EventSource, from a page of Herald's origin, as a
// Mercure web app does. Two pages: an anonymous one, and one whose context
// carries a subscriber token in the `mercureAuthorization` cookie.
//
// The protocol with crates/server/tests/mercure/browser.rs: once both
// EventSources are open this prints `ready`; the test then publishes a private
// update and after it a public one; each page collects its messages until the
// public update's id arrives, and the script prints
// `result {"anonymous": [...], "entitled": [...]}` (each message as
// {lastEventId, data, type}) and exits.
//
// Env: HERALD_URL, TOPIC (the page's selector, which both updates match),
// SUBSCRIBER_TOKEN (for the cookie), PUBLIC_ID (the last update's id).
import { chromium } from "playwright-core";

const { HERALD_URL: base, TOPIC: topic, SUBSCRIBER_TOKEN: token, PUBLIC_ID: publicId } = process.env;
const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args });
const fail = async (why) => { console.error("FAIL: " + why); await browser.close(); process.exit(1); };

// A page of Herald's origin with an EventSource on the door, open once this returns.
async function subscriber(name, cookie) {
  const context = await browser.newContext();
  if (cookie) await context.addCookies([{ name: "mercureAuthorization", value: cookie, url: base }]);
  const page = await context.newPage();
  page.on("pageerror", (e) => fail(`${name} page error: ${e.message}`));
  const response = await page.goto(`${base}/`);
  if (!response.ok()) await fail(`${name}: GET / answered ${response.status()}`);
  const opened = await page.evaluate((topic) => new Promise((resolve) => {
    window.received = [];
    window.errors = 0;
    const source = new EventSource(`/.well-known/mercure?topic=${encodeURIComponent(topic)}`);
    const keep = (e) => window.received.push({ lastEventId: e.lastEventId, data: e.data, type: e.type });
    source.onmessage = keep;
    source.addEventListener("herald.gap", keep);
    source.onopen = () => resolve(true);
    source.onerror = () => { window.errors += 1; if (source.readyState === EventSource.CLOSED) resolve(false); };
    window.source = source;
  }), topic);
  if (!opened) await fail(`${name}: the EventSource was refused`);
  return page;
}

// The messages `page` received until the one with `id` (within 10 s).
async function until(page, name, id) {
  try {
    await page.waitForFunction((id) => window.received.some((m) => m.lastEventId === id), id, { timeout: 10000 });
  } catch {
    await fail(`${name} never received the update ${id}: ${JSON.stringify(await page.evaluate(() => window.received))}`);
  }
  return page.evaluate(() => ({ received: window.received, errors: window.errors }));
}

try {
  const anonymous = await subscriber("anonymous", null);
  const entitled = await subscriber("entitled", token);
  console.log("ready");
  const a = await until(anonymous, "anonymous", publicId);
  const e = await until(entitled, "entitled", publicId);
  if (a.errors || e.errors) await fail(`EventSource errors: anonymous ${a.errors}, entitled ${e.errors}`);
  console.log("result " + JSON.stringify({ anonymous: a.received, entitled: e.received }));
  await browser.close();
} catch (e) {
  await fail(e.stack || String(e));
}
