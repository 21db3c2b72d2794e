// Debian's Chromium for the pages' test and benchmark, started as this machine needs it:
// headless, no sandbox (root), and no background networking (its connections to Google's
// hosts are refused here).
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}
