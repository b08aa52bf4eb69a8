// Loads attache's /diag page in Debian's chromium (headless) and prints what a person
// sees on it as one JSON object on stdout; tests/admin_browser.rs checks it.
//
//   node tests/browser/diag.mjs URL SCREENSHOT.png
//
// The page is read through the DOM as rendered (innerText), so markup that attache
// failed to escape would show up as elements, not text. Any dialog or page error is
// reported: neither may happen on a page that escapes what it shows.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error('usage: node diag.mjs URL SCREENSHOT.png');
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), 'attache-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 60_000,
    viewport: { width: 1400, height: 900 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const dialogs = [];
  const pageErrors = [];
  page.on('dialog', async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  page.on('pageerror', (error) => pageErrors.push(String(error)));

  const response = await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
  const text = (selector) =>
    page.$eval(selector, (el) => el.innerText).catch(() => null);
  const rows = (selector) =>
    page.$$eval(selector, (trs) =>
      trs.map((tr) => Array.from(tr.cells, (td) => td.innerText.trim())),
    );

  const result = {
    status: response ? response.status() : null,
    title: await page.title(),
    serving: await text('#serving'),
    rejected: await text('#rejected'),
    commitMessages: await page.$$eval('.commit-message', (els) =>
      els.map((el) => el.textContent),
    ),
    nodes: await rows('tr.node'),
    routes: await rows('tr.route'),
    clusters: await rows('tr.cluster'),
    // Elements an unescaped commit message or error would have created.
    injected: await page.$$eval('img, b, iframe', (els) =>
      els.map((el) => el.outerHTML),
    ),
    scripts: await page.$$eval('script', (els) => els.length),
    pwned: await page.evaluate(() => window.__attache_pwned ?? null),
    dialogs,
    pageErrors,
  };
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
