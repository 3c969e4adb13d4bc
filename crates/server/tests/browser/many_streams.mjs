// Drives Debian's headless Chromium to open COUNT EventSources from one page
// of Herald's origin (topics many.0 … many.COUNT-1, readable without a
// token), as a page with many live widgets does.
//
// The protocol with crates/server/tests/api/https.rs: once all sources are
// open, or no more opened for WAIT_MS, this prints `opened N PROTOCOL` (how
// many are open, and the protocol the page was loaded over: `h2` or
// `http/1.1`);
// the test then publishes one event to every topic, and this prints
// `received N` (how many sources got theirs within 10 s) and exits.
//
// Env: HERALD_URL, COUNT, WAIT_MS.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const { HERALD_URL: base, COUNT: count, WAIT_MS: waitMs } = process.env;
const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--ignore-certificate-errors"];
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args });
const fail = async (why) => { console.error("FAIL: " + why); await browser.close(); process.exit(1); };

try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => fail(`page error: ${e.message}`));
  const response = await page.goto(`${base}/`);
  if (!response.ok()) await fail(`GET / answered ${response.status()}`);
  await page.evaluate((count) => {
    window.opened = 0;
    window.received = 0;
    for (let i = 0; i < count; i++) {
      const source = new EventSource(`/topics/many.${i}/events`);
      source.onopen = () => { window.opened += 1; };
      source.onmessage = () => { window.received += 1; };
    }
  }, Number(count));
  // Until all are open, or the count has stood still for WAIT_MS (the rest
  // are queued by the browser), at most 30 s.
  let opened = 0;
  let since = Date.now();
  for (const start = Date.now(); Date.now() - start < 30000;) {
    await page.waitForTimeout(100);
    const now = await page.evaluate(() => window.opened);
    if (now !== opened) [opened, since] = [now, Date.now()];
    if (opened === Number(count) || (opened > 0 && Date.now() - since >= Number(waitMs))) break;
  }
  const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  console.log(`opened ${opened} ${protocol}`);
  // Wait for the test to say it published.
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) if (line === "published") break;
  try {
    await page.waitForFunction((opened) => window.received >= opened, opened, { timeout: 10000 });
  } catch {
    // Reported below as a short count.
  }
  console.log(`received ${await page.evaluate(() => window.received)}`);
  await browser.close();
  // stdin's reader would keep node running.
  process.exit(0);
} catch (e) {
  await fail(e.stack || String(e));
}
