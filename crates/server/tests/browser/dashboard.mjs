// Drives Debian's headless Chromium through the Herald dashboard: sign in
// with an admin token, watch the stream count change live as subscribers come
// and go, see a published event arrive on a topic page (the tail not counted
// as a subscriber), see a cut list say so, see the live view turn into a
// sign-in prompt when the admin token expires, use the topic inspector, and
// save screenshots of every page at 1280x800 (and the overview on a phone and
// in dark mode).
//
// Env: HERALD_URL, ADMIN_TOKEN, USER_TOKEN, JWT_SECRET (to mint a short-lived
// admin token), DASHBOARD_ROWS (the server's --dashboard-rows), SCREENSHOT_DIR.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";

const { HERALD_URL: base, ADMIN_TOKEN: admin, USER_TOKEN: user, JWT_SECRET: secret, SCREENSHOT_DIR: shots } = process.env;
const rows = Number(process.env.DASHBOARD_ROWS);
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
// An HS256 token, as `herald token` mints them.
function mint(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}
async function topicStats(topic) {
  const r = await fetch(`${base}/topics/${encodeURIComponent(topic)}`, { headers: { Authorization: `Bearer ${user}` } });
  return { status: r.status, body: await r.json() };
}
const text = (page, id) => page.locator(`#${id}`).textContent();
async function waitIn(page, selector, want, what) {
  try {
    await page.waitForFunction(([selector, want]) => document.querySelector(selector)?.textContent.includes(want), [selector, want], { timeout: 5000 });
  } catch { await fail(`${what}: ${selector} shows "${await page.locator(selector).textContent()}", not "${want}"`); }
}
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

  // Two subscribers arrive: the live count follows (how fast is logged, not
  // asserted: tests hold no wall-clock targets).
  const started = Date.now();
  const a = subscribe("demo"), b = subscribe("news");
  await a.opened; await b.opened;
  await waitText(page, "m-streams", "2", "two streams open");
  console.log(`stream count updated ${Date.now() - started} ms after the subscribers connected`);
  await publish("demo", { data: { hello: "dashboard" }, event: "greeting" });
  await page.waitForFunction(() => document.querySelector("#topics tbody")?.textContent.includes("demo"), null, { timeout: 5000 });
  await page.waitForTimeout(600);
  await page.screenshot({ path: `${shots}/overview.png` });

  b.close();
  await waitText(page, "m-streams", "1", "one stream after a close");

  // A topic page: its live tail shows an event published now, of any type,
  // and does not count as one of the topic's subscribers.
  await page.goto(`${base}/admin/topics/demo`);
  await waitText(page, "tail-state", "live", "topic tail");
  await publish("demo", { data: "hello from the e2e test", event: "note" });
  await page.waitForFunction(() => document.getElementById("tail").textContent.includes("hello from the e2e test"), null, { timeout: 5000 })
    .catch(() => fail("the published event did not appear in the tail"));
  await waitIn(page, "#tail .type", "note", "the tail shows the event's type");
  await page.waitForTimeout(1200); // a few live snapshots
  await waitText(page, "t-subscribers", "1", "the tail is not a subscriber");
  const stats = await topicStats("demo");
  if (stats.body.subscribers !== 1) await fail(`GET /topics/demo counts the tail: ${JSON.stringify(stats.body)}`);
  await page.screenshot({ path: `${shots}/topic.png` });

  // More streams than the dashboard lists: the true count, and a notice.
  const extra = Array.from({ length: rows + 1 }, (_, i) => subscribe(`extra.${i}`));
  await Promise.all(extra.map((x) => x.opened));
  const total = String(rows + 2);
  await page.goto(`${base}/admin/connections`);
  await waitText(page, "c-count", total, "the streams count is the true count");
  await page.waitForTimeout(1200); // live updates keep it true
  await waitText(page, "c-count", total, "the streams count stays the true count");
  if ((await page.locator("#connections tbody tr").count()) !== rows) await fail(`more than ${rows} rows listed`);
  await waitIn(page, "#c-more", `showing ${rows} of ${total} streams`, "the connections list says it is cut");
  if (await page.locator("#c-more").isHidden()) await fail("the notice of a cut list is hidden");
  await page.screenshot({ path: `${shots}/connections.png` });
  extra.forEach((x) => x.close());
  await waitText(page, "c-count", "1", "one stream after the extra ones closed");
  if (await page.locator("#c-more").isVisible()) await fail("the notice stays when nothing is cut");

  await page.goto(`${base}/admin/metrics`);
  await page.screenshot({ path: `${shots}/metrics.png` });

  // The inspector: every event type shows, switching topics clears the list,
  // a pattern cannot be published to, and refusals say why.
  await page.goto(`${base}/inspector`);
  await page.fill("#token", user);
  await page.fill("#topic", "demo");
  await page.click("#subscribe");
  await waitText(page, "state", "live: demo", "the inspector subscribes");
  await publish("demo", { data: { total: 42 }, event: "invoice.paid" });
  await waitIn(page, "#events", "invoice.paid", "an event of a type the inspector was not told about");
  await waitIn(page, "#events", "42", "that event's data");
  await page.fill("#data", '{"hello": "inspector"}');
  await page.fill("#type", "greeting");
  await page.click("#publish");
  await waitIn(page, "#result", "201 published", "a publish from the form");
  await waitIn(page, "#events", "inspector", "the form's event arrives");
  await page.screenshot({ path: `${shots}/inspector.png` });

  await page.fill("#topic", "other");
  await page.click("#subscribe");
  if ((await page.locator("#events li").count()) !== 0) await fail("the list was not cleared when switching topics");
  await waitText(page, "count", "0 received", "the count restarts with the topic");
  await waitText(page, "state", "live: other", "the inspector follows the new topic");

  await page.fill("#topic", "orders.*");
  await page.fill("#publish-topic", "");
  await page.click("#publish");
  await waitIn(page, "#result", "exact topic name", "publishing to a pattern is refused");
  for (const name of ["orders.", "orders.*"]) {
    const junk = await topicStats(name);
    if (junk.status !== 404 && junk.status !== 400) await fail(`publishing to a pattern made topic ${name}: ${JSON.stringify(junk.body)}`);
  }

  await page.fill("#token", "not-a-token");
  await page.fill("#publish-topic", "demo");
  await page.click("#publish");
  await waitIn(page, "#result", "401 invalid_token", "a refused publish shows the server's error");
  await page.fill("#topic", "private.orders");
  await page.click("#subscribe");
  await waitText(page, "state", "refused", "a refused subscription");
  await waitIn(page, "#reason", "401 invalid_token", "a refused subscription says why");
  await page.screenshot({ path: `${shots}/inspector-refused.png` });

  // The admin token expires: the live view ends with a sign-in prompt.
  const expiring = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const expiringPage = await expiring.newPage();
  expiringPage.on("pageerror", (e) => fail("page error: " + e.message));
  const exp = Math.floor(Date.now() / 1000) + 4;
  const short = mint({ sub: "ops", exp, herald: { publish: [], subscribe: [], admin: true } });
  await expiringPage.goto(`${base}/admin?access_token=${short}`);
  await expiringPage.locator("#signed-out").waitFor({ state: "visible", timeout: 15000 })
    .catch(() => fail("no sign-in prompt after the admin token expired"));
  await waitText(expiringPage, "live-pill", "signed out", "the live pill after expiry");
  await waitIn(expiringPage, "#signed-out", "Sign in again", "the prompt offers to sign in");
  await expiringPage.screenshot({ path: `${shots}/signed-out.png` });

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
