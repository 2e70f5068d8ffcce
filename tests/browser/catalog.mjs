// Browser tests of the web catalog: Debian's headless chromium driven by playwright-core.
// Usage: CATALOG_URL=http://127.0.0.1:PORT SCREENSHOTS=DIR node catalog.mjs
// The Rust test tests/catalog_browser.rs starts the registry and the proxy, pushes the
// packages and runs this; any failed check exits non-zero with the reason.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.CATALOG_URL;
const shots = process.env.SCREENSHOTS || join(tmpdir(), "catalog-shots");
mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "chromium-profile-"));

function check(cond, what) {
  if (!cond) throw new Error("FAILED: " + what);
  console.log("ok - " + what);
}

// A fresh profile directory per run (playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1200, height: 900 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Network statuses are logged as console errors; the 422 of an invalid configuration
  // and the favicon's 404 are expected, so only script errors count.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });
  page.on("dialog", async (d) => { errors.push("dialog: " + d.message()); await d.dismiss(); });

  // The list shows the demo apps.
  await page.goto(base + "/catalog/");
  const repos = await page.$$eval("li.app", (els) => els.map((e) => e.dataset.repository));
  check(repos.includes("apps/northwind/line-monitor") && repos.includes("apps/contoso/sensor-gateway"),
    "list shows the demo apps: " + repos.join(", "));
  const icons = await page.$$eval("li.app img.icon", (els) => els.map((i) => i.naturalWidth));
  check(icons.length >= 2 && icons.every((w) => w === 64), "list icons load: " + icons.join(","));
  await page.screenshot({ path: join(shots, "list.png"), fullPage: true });

  // Search filters.
  await page.fill("#q", "mqtt");
  await Promise.all([page.waitForNavigation(), page.click("form#search button[type=submit]")]);
  const found = await page.$$eval("li.app", (els) => els.map((e) => e.dataset.repository));
  check(found.length === 1 && found[0] === "apps/contoso/sensor-gateway", "search 'mqtt' finds only sensor-gateway: " + found.join(", "));
  await page.selectOption("#profile", "helm");
  await page.fill("#q", "");
  await Promise.all([page.waitForNavigation(), page.click("form#search button[type=submit]")]);
  const helm = await page.$$eval("li.app", (els) => els.map((e) => e.dataset.repository));
  check(helm.length === 1 && helm[0] === "apps/northwind/line-monitor", "profile filter helm: " + helm.join(", "));

  // The app page shows the icon and the release notes.
  await page.goto(base + "/catalog/app/apps/northwind/line-monitor");
  const width = await page.$eval("img.icon-large", (i) => i.naturalWidth);
  check(width === 64, "app page icon rendered (naturalWidth " + width + ")");
  const notes = await page.textContent("#release-notes");
  check(notes.includes("Notification channels"), "release notes rendered");
  check(await page.$("#release-notes strong") !== null, "release notes Markdown became markup");
  await page.screenshot({ path: join(shots, "app.png"), fullPage: true });

  // The form reports a regexMatch violation, then accepts a valid value.
  const line = '.field[data-parameter="lineCode"] input';
  await page.fill(line, "ab12");
  await page.click("form#config button[type=submit]");
  // Locators, not waitForFunction: the page's CSP (rightly) forbids evaluating strings.
  await page.locator('.violation[data-for="lineCode"]', { hasText: "regexMatch" }).waitFor();
  const msg = await page.textContent('.violation[data-for="lineCode"]');
  check(msg.includes("Line code") && msg.includes("regexMatch"), "form shows the regexMatch violation: " + msg);
  check(await page.getAttribute(line, "aria-invalid") === "true", "the field is marked invalid");
  await page.screenshot({ path: join(shots, "form-invalid.png"), fullPage: true });
  await page.fill(line, "AB123");
  await page.click("form#config button[type=submit]");
  await page.locator("#config-status", { hasText: "Valid configuration." }).waitFor();
  check(await page.textContent('.violation[data-for="lineCode"]') === "", "valid value clears the violation");
  const resolved = await page.$$eval("#resolved tbody tr", (rows) => rows.map((r) => r.textContent));
  check(!(await page.$eval("#resolved", (t) => t.hidden)) && resolved.some((r) => r.includes("line.code") && r.includes("AB123")),
    "resolved per-component values shown");
  await page.screenshot({ path: join(shots, "form-valid.png"), fullPage: true });

  // A script tag in a description is shown as text.
  await page.goto(base + "/catalog/app/apps/evil/xss");
  const desc = await page.textContent("#description");
  check(desc.includes("<script>"), "description shown as text: " + desc);
  const name = await page.textContent("#app-name");
  check(name.includes("<b>"), "name shown as text: " + name);
  check(await page.$("#description script, #description img, #release-notes script, #release-notes img, h1 b") === null,
    "no element was created from margo.yaml or release notes");
  const xss = await page.evaluate(() => window.__xss);
  check(xss === undefined, "no injected script ran");
  await page.goto(base + "/catalog/?q=xss");
  check((await page.evaluate(() => window.__xss)) === undefined, "list page ran no injected script");
  await page.screenshot({ path: join(shots, "xss.png"), fullPage: true });
  check(errors.length === 0, "no script errors, dialogs or console errors: " + errors.join(" | "));
} catch (e) {
  console.error(String(e && e.stack || e));
  failed = true;
} finally {
  await browser.close();
}
console.log("screenshots in " + shots);
process.exit(failed ? 1 : 0);
