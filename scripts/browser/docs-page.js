// Drives GET /docs in a real browser (Debian's chromium, headless, through
// playwright-core) against a running service, as a visitor would:
//   1. the page lists every operation of /openapi.json;
//   2. "Try it out" on GET /api/v1/public/pizzas shows 200 with the seed pizzas;
//   3. after authorizing as dev-client/dev-secret-123 (client credentials),
//      POST /api/v1/pizzas from the page returns 201;
// and the browser reports no Content-Security-Policy violation on the way.
//
//   node scripts/browser/docs-page.js http://127.0.0.1:PORT
// Exits non-zero with a line saying what failed.
"use strict";

const { chromium } = require("playwright-core");

const BASE = process.argv[2];
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP_MS = 30000;

function fail(message) {
  console.error(`docs-page: FAIL: ${message}`);
  process.exit(1);
}

// The operation block of METHOD PATH (exact path, not a prefix of another).
function operation(page, method, path) {
  return page.locator(`.opblock-${method}`, {
    has: page.locator(`.opblock-summary-path[data-path="${path}"]`),
  });
}

async function tryItOut(block) {
  await block.locator(".opblock-summary").first().click();
  await block.locator("button.try-out__btn").click({ timeout: STEP_MS });
}

async function executeAndRead(block) {
  await block.locator("button.execute").click({ timeout: STEP_MS });
  const status = block.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor({ timeout: STEP_MS });
  const body = await block.locator(".live-responses-table .response .response-col_description").first().innerText();
  // The status cell holds the code, then "Undocumented" when the document lacks it.
  const code = (await status.innerText()).trim().split(/\s+/)[0];
  return { status: code, body, text: (await block.locator(".live-responses-table").first().innerText()).slice(0, 400) };
}

(async () => {
  if (!BASE) fail("usage: node docs-page.js http://127.0.0.1:PORT");
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage",
      "--no-first-run", "--disable-extensions"],
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on("console", (message) => {
      if (/Content Security Policy|Refused to/i.test(message.text())) problems.push(message.text());
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));

    const response = await page.goto(`${BASE}/docs`);
    if (!response || response.status() !== 200) fail(`GET /docs answered ${response && response.status()}`);
    if (!response.headers()["content-security-policy"]) fail("GET /docs has no Content-Security-Policy");

    // 1. Every operation of the document is on the page.
    const spec = await (await page.request.get(`${BASE}/openapi.json`)).json();
    const expected = [];
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of ["get", "put", "post", "delete", "patch", "head", "options"]) {
        if (item[method]) expected.push(`${method.toUpperCase()} ${path}`);
      }
    }
    await page.locator(".opblock").first().waitFor();
    const listed = await page.$$eval(".opblock", (blocks) =>
      blocks.map((b) => {
        const method = b.querySelector(".opblock-summary-method").textContent.trim();
        const path = b.querySelector(".opblock-summary-path").getAttribute("data-path");
        return `${method} ${path}`;
      }));
    const missing = expected.filter((op) => !listed.includes(op));
    if (missing.length) fail(`operations missing from the page: ${missing.join(", ")}`);
    console.log(`docs-page: ok: all ${expected.length} operations listed`);

    // 2. Try it out: the public list.
    const list = operation(page, "get", "/api/v1/public/pizzas");
    await tryItOut(list);
    // The page pre-fills each parameter with the document's example (name=marg):
    // clear them to ask for the whole list.
    for (const input of await list.locator(".parameters input[type=text], .parameters input:not([type])").all()) {
      await input.fill("");
    }
    const listed200 = await executeAndRead(list);
    if (listed200.status !== "200") fail(`GET /api/v1/public/pizzas from the page: ${listed200.text}`);
    for (const name of ["Margherita", "Pepperoni", "Vegetarian"]) {
      if (!listed200.body.includes(name)) fail(`the list shown lacks ${name}`);
    }
    console.log("docs-page: ok: GET /api/v1/public/pizzas from the page: 200 with the seed pizzas");

    // 3. Authorize with the client-credentials flow, then create a pizza.
    await page.locator(".auth-wrapper button.authorize").click();
    const dialog = page.locator(".dialog-ux");
    const oauth = dialog.locator(".auth-container", { hasText: "clientCredentials" });
    await oauth.locator("input[data-name=clientId]").fill("dev-client");
    await oauth.locator("input[data-name=clientSecret]").fill("dev-secret-123");
    await oauth.locator("button.authorize").click();
    await oauth.locator("button", { hasText: "Logout" }).waitFor({ timeout: STEP_MS }).catch(async () => {
      const text = await oauth.innerText();
      fail(`authorizing as dev-client did not succeed: ${text.replace(/\s+/g, " ").slice(0, 1200)}`);
    });
    await dialog.locator("button.close-modal").click();
    console.log("docs-page: ok: authorized as dev-client (client credentials)");

    const create = operation(page, "post", "/api/v1/pizzas");
    await tryItOut(create);
    await create.locator("textarea.body-param__text").fill(
      JSON.stringify({ name: "From the docs page", ingredients: ["Tomato Sauce"], price: 9.5 }));
    const created = await executeAndRead(create);
    if (created.status !== "201") fail(`POST /api/v1/pizzas from the page: ${created.status}: ${created.body.slice(0, 300)}`);
    console.log("docs-page: ok: POST /api/v1/pizzas from the page: 201");

    if (problems.length) fail(`the browser reported: ${problems.join(" | ")}`);
    console.log("docs-page: ok: no Content-Security-Policy violation or page error");
  } finally {
    await browser.close();
  }
})().catch((error) => fail(error.stack || String(error)));
