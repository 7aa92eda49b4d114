// The admin UI in a real browser: Debian's chromium driven by
// playwright-core. Run by tests/ui_browser.rs, which starts the servers and
// seeds the database, then checks the database afterwards.
//
// Environment: UI_URL (actions on), UI_RO_URL (read-only), SHOT_DIR (where
// screenshots go), FAILED_ID (a permanently failed job), XSS_ID (a job
// whose payload and last error hold a script tag).
// Prints one JSON object with what it saw; exits non-zero on a failed check.

const { chromium } = require('playwright-core');

function check(ok, message) {
  if (!ok) {
    throw new Error(message);
  }
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-default-apps',
      '--disable-sync',
      '--no-first-run',
      '--metrics-recording-only',
    ],
  });
  const seen = { pages: {}, dialogs: [], alerts: 0 };
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    page.on('dialog', async (dialog) => {
      seen.dialogs.push({ type: dialog.type(), message: dialog.message() });
      if (dialog.type() === 'alert') {
        seen.alerts += 1;
      }
      await dialog.accept();
    });
    const base = process.env.UI_URL;

    // Every page loads, with its heading.
    for (const [path, heading] of [
      ['/', 'Dashboard'],
      ['/jobs', 'Jobs'],
      [`/jobs/${process.env.FAILED_ID}`, `Job ${process.env.FAILED_ID}`],
      ['/queues', 'Queues'],
      ['/workers', 'Workers'],
      ['/cron', 'Cron'],
    ]) {
      const response = await page.goto(base + path);
      const h1 = (await page.textContent('h1')).trim();
      seen.pages[path] = { status: response.status(), h1 };
      check(response.status() === 200, `${path}: status ${response.status()}`);
      check(h1 === heading, `${path}: heading ${JSON.stringify(h1)}`);
    }

    // Screenshots for the README, once the chart has samples.
    await page.goto(base + '/');
    await page.waitForSelector('svg.chart', { timeout: 15000 });
    await page.screenshot({ path: `${process.env.SHOT_DIR}/dashboard.png`, fullPage: true });
    await page.goto(base + '/jobs');
    await page.screenshot({ path: `${process.env.SHOT_DIR}/jobs.png`, fullPage: true });

    // The XSS job: its payload and error show as text and run nothing.
    await page.goto(`${base}/jobs/${process.env.XSS_ID}`);
    const payload = await page.textContent('pre.payload');
    const lastError = await page.textContent('pre.last-error');
    seen.xss = { payload, lastError };
    check(payload.includes('<script>alert(1)</script>'), 'payload shown as text');
    check(lastError.includes('<script>alert(1)</script>'), 'last error shown as text');
    await page.goto(`${base}/jobs?error=${encodeURIComponent('<script>')}`);
    check(seen.alerts === 0, 'no script ran');

    // Retry the permanently failed job by clicking: tick its row, press
    // Retry, and read the notice.
    await page.goto(`${base}/jobs?state=failed`);
    await page.check(`input[name=ids][value="${process.env.FAILED_ID}"]`);
    await Promise.all([
      page.waitForURL(/notice=/),
      page.click('button[name=action][value=retry]'),
    ]);
    seen.retryNotice = (await page.textContent('.notice')).trim();
    check(seen.retryNotice === 'Retried 1 job.', `retry notice ${JSON.stringify(seen.retryNotice)}`);

    // A destructive action asks first: Delete on the job page, confirmed.
    await page.goto(`${base}/jobs/${process.env.DELETE_ID}`);
    await Promise.all([
      page.waitForURL(/notice=/),
      page.click('button[name=action][value=delete]'),
    ]);
    seen.deleteNotice = (await page.textContent('.notice')).trim();
    check(
      seen.dialogs.some((d) => d.type === 'confirm' && d.message === `Delete job ${process.env.DELETE_ID}?`),
      'delete asked for confirmation',
    );

    // Read-only: no action buttons, and a POST from the page is refused.
    const ro = process.env.UI_RO_URL;
    await page.goto(`${ro}/jobs`);
    seen.readOnlyButtons = await page.locator('button[name=action]').count();
    check(seen.readOnlyButtons === 0, 'read-only pages have no action buttons');
    seen.readOnlyPost = await page.evaluate(async () => {
      const token = document.querySelector('meta[name=csrf-token]').content;
      const body = new URLSearchParams({ csrf: token, action: 'retry-all' });
      const response = await fetch('jobs/actions', { method: 'POST', body });
      return response.status;
    });
    check(seen.readOnlyPost === 403, `read-only POST status ${seen.readOnlyPost}`);

    // A phone-sized screen still shows the jobs table.
    await page.setViewportSize({ width: 390, height: 800 });
    await page.goto(`${base}/jobs`);
    seen.narrowRows = await page.locator('tbody tr').count();
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
})().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
