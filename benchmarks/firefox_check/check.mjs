// genlab serve's page in Firefox: the interactions of tests/test_serve.py's Chromium tests, driven over
// WebDriver BiDi (Firefox ESR speaks it natively; Playwright would need its own patched Firefox build).
//
//   node check.mjs URL OUT_DIR [FIREFOX]
//
// URL: a running `genlab serve` (every run it serves is checked, switching runs by their tabs);
// OUT_DIR: where the screenshots go (firefox-<run>.png); FIREFOX: default /usr/bin/firefox-esr.
// What each run is asked to do follows its capabilities (GET /api/runs/<run>), as the page itself does.
// Exit status 0 when every check passed, 1 otherwise; each check prints one line.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const [url, outDir, firefox = "/usr/bin/firefox-esr"] = process.argv.slice(2);
if (!url || !outDir) {
  console.error("usage: node check.mjs URL OUT_DIR [FIREFOX]");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const failures = [];
const pageErrors = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
  return ok;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll in node rather than with page.waitForFunction: nothing here depends on how a driver
// evaluates strings under the page's Content-Security-Policy.
async function until(probe, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs;
  let value;
  while (Date.now() < end) {
    value = await probe();
    if (value) return value;
    await sleep(50);
  }
  return value;
}

const attr = (page, sel, name) => page.$eval(sel, (e, n) => e.getAttribute(n), name);
const text = (page, sel) => page.$eval(sel, (e) => e.textContent);
const visible = (page, sel) =>
  page.$eval(sel, (e) => !e.closest("[hidden]") && e.getBoundingClientRect().width > 0).catch(() => false);

// The decoded image's src once it is a PNG other than `old` (null: any PNG).
async function newSrc(page, old) {
  return until(async () => {
    const src = await attr(page, "#decoded", "src");
    return src && src.startsWith("data:image/png") && src !== old ? src : null;
  });
}

async function statusSays(page, words) {
  return until(async () => (await text(page, "#decode-status")).includes(words));
}

async function checkRun(page, run, info) {
  const P = info.panels;
  const say = (what) => `${run}: ${what}`;
  const shown = await page.$eval("#run-tabs button[aria-current=true]", (b) => b.dataset.run);
  const before = await attr(page, "#decoded", "src");
  await page.click(`#run-tabs button[data-run="${run}"]`);
  check(await until(async () => (await text(page, "#run-title")).includes(info.title)), say(`title shows ${info.title}`));
  // a switch of run must replace the last run's image (the run on show re-decodes the same z)
  let src = await newSrc(page, shown === run ? null : before);
  check(Boolean(src), say("its first z decodes to a PNG"));

  // the map: hover decodes where the mouse is; or its reason when a run has none
  if (P.map.ok) {
    const box = await (await page.$("#map")).boundingBox();
    await page.mouse.move(box.x + 60, box.y + 80);
    const hovered = await newSrc(page, src);
    check(Boolean(hovered), say("hovering the map decodes a new image"));
    await page.mouse.move(box.x + box.width - 60, box.y + box.height - 80, { steps: 5 });
    src = await newSrc(page, hovered);
    check(Boolean(src) && (await statusSays(page, "map (")), say("dragging across the map decodes again"));
  } else {
    const na = await page.$eval("#map-card > .na", (e) => e.textContent).catch(() => "");
    check(na === P.map.reason && !(await visible(page, "#map")), say(`map hidden, reason shown: "${na.slice(0, 60)}…"`));
  }

  // a slider (the first latent coordinate's) moved with the keyboard, as a user would
  const sliders = await page.$$(".zslider");
  if (P.sliders.ok) {
    const first = info.sliders.findIndex((s) => s.dim !== null);
    await sliders[first].focus();
    await page.keyboard.press("End");
    check(await statusSays(page, `slider ${info.sliders[first].label} =`), say(`slider ${info.sliders[first].label} decodes`));
    src = (await newSrc(page, src)) || src;
  } else {
    const ranking = await text(page, "#ranking");
    check(sliders.length === 0 && ranking === P.sliders.reason, say("no sliders, reason shown"));
  }

  // random z, then the temperature
  if (P.random.ok) {
    await page.click("#random");
    check(await statusSays(page, "random z"), say("random z decodes"));
    src = (await newSrc(page, src)) || src;
    await page.focus("#temperature");
    await page.keyboard.press("Home"); // temperature 0: z = 0 x draw
    check(await statusSays(page, "temperature 0.00"), say("temperature slider rescales the draw"));
    src = (await newSrc(page, src)) || src;
    for (let i = 0; i < 20; i++) await page.keyboard.press("ArrowRight"); // back to 1.00, in steps of 0.05
    check(await statusSays(page, "temperature 1.00"), say("and back to temperature 1"));
  }

  // interpolation: A here, B at a fresh random z
  if (P.interpolate.ok) {
    const mode = await page.$eval("#mode", (e) => e.value);
    check(mode === info.interpolation_mode, say(`interpolation defaults to ${info.interpolation_mode}`));
    await page.click("#set-a");
    await page.click("#random");
    await statusSays(page, "random z");
    await page.click("#set-b");
    const n = await until(async () => ((await page.$$("#strip img")).length === 10 ? 10 : 0));
    const loaded = await page.$$eval("#strip img", (ims) => ims.every((im) => im.src.startsWith("data:image/png")));
    check(n === 10 && loaded, say("interpolation strip of 10 images"));
  }

  // drawing: encoded when the mouse is released
  if (P.encode.ok) {
    const d = await (await page.$("#draw")).boundingBox();
    await page.mouse.move(d.x + 98, d.y + 30);
    await page.mouse.down();
    await page.mouse.move(d.x + 98, d.y + 166, { steps: 8 });
    await page.mouse.up();
    const shown = await until(() => visible(page, "#encode-result"), 30_000);
    const recon = shown ? await attr(page, "#recon", "src") : "";
    check(Boolean(shown) && recon.startsWith("data:image/png"), say("drawing gives a reconstruction"));
    if (P.likelihood.ok) {
      check(await until(async () => (await text(page, "#likelihood")).includes("nats")), say("and its likelihood bound"));
    }
  } else {
    const na = await page.$eval("#encode-card > .na", (e) => e.textContent).catch(() => "");
    check(na === P.encode.reason && !(await visible(page, "#draw")), say(`encoder panel hidden: "${na}"`));
  }

  // the run panel: description, curves, the sample grid actually loaded
  check(await until(async () => (await text(page, "#run-desc")).startsWith(info.title)), say("run panel describes the run"));
  const curves = await until(async () => (await page.$$("#curves canvas")).length);
  check(curves > 0, say(`${curves} training curve(s)`));
  const grid = await until(() =>
    page.$eval("#pictures img.samples", (im) => im.complete && im.naturalWidth > 0).catch(() => false),
  );
  check(Boolean(grid), say("sample grid loaded"));
  const shot = join(outDir, `firefox-${run}.png`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`     screenshot ${shot}`);
}

const browser = await puppeteer.launch({ browser: "firefox", executablePath: firefox, headless: true });
try {
  console.log(`browser ${await browser.version()}`);
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message || e}`));
  page.on("console", (m) => (m.type() === "error" ? pageErrors.push(`console error: ${m.text()}`) : null));
  const base = url.endsWith("/") ? url : `${url}/`;
  await page.goto(base);
  check(Boolean(await until(() => page.$("body[data-ready=true]"))), "page laid out its first run");
  const runs = await (await fetch(`${base}api/runs`)).json();
  for (const { name } of runs) {
    const info = await (await fetch(`${base}api/runs/${encodeURIComponent(name)}`)).json();
    await checkRun(page, name, info);
  }
  check(pageErrors.length === 0, `no page or console errors${pageErrors.length ? `: ${pageErrors.join(" | ")}` : ""}`);
} catch (err) {
  check(false, `the check itself failed: ${err.stack || err}`);
} finally {
  await browser.close();
}
console.log(failures.length ? `${failures.length} check(s) FAILED` : "all checks passed");
process.exit(failures.length ? 1 : 0);
