#!/usr/bin/env node
// run.js PAGES.json: opens each payer page in Debian's headless Chromium at a
// phone viewport, checks that it renders (title, buttons, no sideways
// scrolling, tap targets of at least 44 px, text that grows in the large-text
// mode), saves a screenshot, and audits it with axe-core (WCAG 2.1 A and AA).
// Prints one JSON document: {"pages": [{name, ok, errors, violations, ...}]}.
// t/browser.t starts nginx and Redis, writes PAGES.json and judges the result.
//
// PAGES.json: {"out": "<screenshot dir>", "pages": [{"name", "url",
//              "buttons": <at least this many .btn>, "big": true|false,
//              "fill": "<typed into #q, then the form is submitted>",
//              "strict": true: any axe violation fails, not only serious ones}]}

'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const CHROMIUM = process.env.GOV_PAY_CHROMIUM || '/usr/bin/chromium';

const PHONE = {
    viewport: { width: 360, height: 740 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    locale: 'zh-CN',
    userAgent: 'Mozilla/5.0 (Linux; Android 12; M2006C3LC) AppleWebKit/537.36 '
        + '(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36',
    // axe-core is injected as a script; the pages' own CSP forbids scripts
    bypassCSP: true,
};

async function checkPage(browser, spec, out) {
    const result = { name: spec.name, url: spec.url, strict: !!spec.strict,
                     ok: true, errors: [],
                     violations: [], buttons: 0, screenshot: null };
    const fail = (msg) => { result.ok = false; result.errors.push(msg); };

    const context = await browser.newContext(PHONE);
    const page = await context.newPage();
    const outside = [];

    // any request to another host is a failure: pages have no outside asset
    page.on('request', (req) => {
        const u = new URL(req.url());
        const base = new URL(spec.url);
        if (u.protocol !== 'data:' && u.host !== base.host) {
            outside.push(req.url());
        }
    });

    try {
        const res = await page.goto(spec.url, { waitUntil: 'load',
                                                timeout: 15000 });
        result.status = res ? res.status() : 0;

        // a form page: type into it and submit, then check the result page
        if (spec.fill) {
            await page.fill('#q', spec.fill);
            await Promise.all([
                page.waitForNavigation({ waitUntil: 'load', timeout: 15000 }),
                page.click('button[type=submit]'),
            ]);
        }

        const info = await page.evaluate(() => {
            const tiny = [];
            for (const el of document.querySelectorAll('a[href], button, input')) {
                const r = el.getBoundingClientRect();
                if (r.width === 0 && r.height === 0) {
                    continue;       // not shown (e.g. hidden on phones)
                }
                if (r.height < 44 || r.width < 44) {
                    tiny.push(`${el.tagName.toLowerCase()} "${el.textContent.trim()}" `
                              + `${Math.round(r.width)}x${Math.round(r.height)}`);
                }
            }
            return {
                title: document.title,
                lang: document.documentElement.lang,
                buttons: document.querySelectorAll('.btn').length,
                scrollWidth: document.documentElement.scrollWidth,
                innerWidth: window.innerWidth,
                bodyFont: parseFloat(getComputedStyle(document.body).fontSize),
                big: document.documentElement.classList.contains('big'),
                modeLink: !!document.querySelector('a.mode'),
                tiny,
            };
        });

        result.buttons = info.buttons;
        result.bodyFont = info.bodyFont;

        if (!info.title) fail('the page has no title');
        if (info.lang !== 'zh-CN') fail(`lang is "${info.lang}", not zh-CN`);
        if (info.buttons < (spec.buttons || 0)) {
            fail(`${info.buttons} buttons, expected at least ${spec.buttons}`);
        }
        if (info.scrollWidth > info.innerWidth + 1) {
            fail(`the page scrolls sideways (${info.scrollWidth} > ${info.innerWidth})`);
        }
        if (info.tiny.length) fail(`tap targets under 44 px: ${info.tiny.join('; ')}`);
        if (!info.modeLink) fail('no link to the large-text mode (长辈模式)');
        if (spec.big && !info.big) fail('the large-text mode is not on');

        fs.mkdirSync(out, { recursive: true });
        result.screenshot = path.join(out, `${spec.name}.png`);
        await page.screenshot({ path: result.screenshot, fullPage: true });

        await page.addScriptTag({ content: AXE });
        const axe = await page.evaluate(async () => {
            // eslint-disable-next-line no-undef
            const r = await axe.run(document, {
                runOnly: { type: 'tag',
                           values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa',
                                    'best-practice'] },
                resultTypes: ['violations'],
            });
            return r.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')),
            }));
        });
        result.violations = axe;
        for (const v of axe) {
            if (spec.strict || v.impact === 'serious' || v.impact === 'critical') {
                fail(`axe ${v.impact}: ${v.id} (${v.help}) at ${v.nodes.join(', ')}`);
            }
        }

        if (outside.length) fail(`requests to other hosts: ${outside.join(', ')}`);
    } catch (e) {
        fail(`${e.name}: ${e.message}`);
    } finally {
        await context.close();
    }

    return result;
}

async function main() {
    const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
    const browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu',
               '--disable-background-networking', '--disable-component-update',
               '--disable-sync', '--no-first-run'],
    });

    const results = [];
    try {
        for (const p of spec.pages) {
            results.push(await checkPage(browser, p, spec.out));
        }
    } finally {
        await browser.close();
    }

    process.stdout.write(JSON.stringify({ pages: results }) + '\n');
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ error: `${e.name}: ${e.message}` }) + '\n');
    process.exit(1);
});
