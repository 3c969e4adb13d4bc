// Drives Debian's headless Chromium through the Herald dashboard: sign in
// with an admin token, watch the stream count change live as subscribers come
// and go, see a published event arrive on a topic page, and save screenshots
// of every page at 1280x800 (and the overview on a phone and in dark mode).
//
// Env: HERALD_URL, ADMIN_TOKEN, USER_TOKEN, SCREENSHOT_DIR.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const { HERALD_URL: base, ADMIN_TOKEN: admin, USER_TOKEN: user, SCREENSHOT_DIR: shots } = process.env;
mkdirSync(shots, { recursive: true });
const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args });
const fail = async (why) => { console.error("FAIL: " + why); await browser.close(); process.exit(1); };

// A subscriber outside the browser, closed by aborting its request.
function subscribe(topic) {
  const controller = new AbortController();
  const opened = fetch(`${base}/topics/${topic}/events`, { headers: { Authorization: `Bearer ${user}` }, signal: controller.signal })
    .then(async (r) => { const reader = r.body.getReader(); await reader.read(); return reader; });
  return { opened, close: () => controller.abort() };
}
async function publish(topic, body) {
  const r = await fetch(`${base}/topics/${topic}/events`, {
    method: "POST", headers: { Authorization: `Bearer ${user}`, "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (r.status !== 201) await fail(`publish answered ${r.status}`);
}
const text = (page, id) => page.locator(`#${id}`).textContent();
async function waitText(page, id, want, what) {
  try {
    await page.waitForFunction(([id, want]) => document.getElementById(id)?.textContent.trim() === want, [id, want], { timeout: 5000 });
  } catch { await fail(`${what}: #${id} shows ${await text(page, id)}, not ${want}`); }
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(`${base}/admin?access_token=${admin}`);
  if (new URL(page.url()).search) await fail("the token stayed in the address bar: " + page.url());
  await waitText(page, "live-pill", "live", "live feed");
  await waitText(page, "m-streams", "0", "no streams at first");

  // Two subscribers arrive: the count follows within a second or so.
  const started = Date.now();
  const a = subscribe("demo"), b = subscribe("news");
  await a.opened; await b.opened;
  await waitText(page, "m-streams", "2", "two streams open");
  const lag = Date.now() - started;
  console.log(`stream count updated ${lag} ms after the subscribers connected`);
  if (lag > 1500) await fail(`the count took ${lag} ms to update`);
  await publish("demo", { data: { hello: "dashboard" }, event: "greeting" });
  await page.waitForFunction(() => document.querySelector("#topics tbody")?.textContent.includes("demo"), null, { timeout: 5000 });
  await page.waitForTimeout(600);
  await page.screenshot({ path: `${shots}/overview.png` });

  b.close();
  await waitText(page, "m-streams", "1", "one stream after a close");

  // A topic page: its live tail shows an event published now.
  await page.goto(`${base}/admin/topics/demo`);
  await waitText(page, "tail-state", "live", "topic tail");
  await publish("demo", { data: "hello from the e2e test", event: "note" });
  await page.waitForFunction(() => document.getElementById("tail").textContent.includes("hello from the e2e test"), null, { timeout: 5000 })
    .catch(() => fail("the published event did not appear in the tail"));
  await page.screenshot({ path: `${shots}/topic.png` });

  await page.goto(`${base}/admin/connections`);
  await page.waitForFunction(() => document.querySelectorAll("#connections tbody tr").length >= 1, null, { timeout: 5000 })
    .catch(() => fail("no connection listed"));
  await page.waitForTimeout(600);
  await page.screenshot({ path: `${shots}/connections.png` });

  await page.goto(`${base}/admin/metrics`);
  await page.screenshot({ path: `${shots}/metrics.png` });
  await page.goto(`${base}/inspector`);
  await page.screenshot({ path: `${shots}/inspector.png` });

  const dark = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "dark" });
  const darkPage = await dark.newPage();
  await darkPage.goto(`${base}/admin?access_token=${admin}`);
  await waitText(darkPage, "live-pill", "live", "dark live feed");
  await darkPage.waitForTimeout(600);
  await darkPage.screenshot({ path: `${shots}/overview-dark.png` });

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
  const phonePage = await phone.newPage();
  await phonePage.goto(`${base}/admin?access_token=${admin}`);
  await waitText(phonePage, "live-pill", "live", "phone live feed");
  await phonePage.screenshot({ path: `${shots}/overview-phone.png` });

  const stranger = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const login = await stranger.newPage();
  const response = await login.goto(`${base}/admin`);
  if (response.status() !== 401) await fail(`the sign-in page answered ${response.status()}`);
  await login.screenshot({ path: `${shots}/login.png` });

  a.close();
  await browser.close();
  console.log("dashboard e2e: ok");
} catch (e) {
  await fail(e.stack || String(e));
}
