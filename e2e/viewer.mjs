// End-to-end test of the pairlens viewer in a real headless Chromium.
//
//   node e2e/viewer.mjs BASE_URL OUT_DIR
//
// Loads the page served at BASE_URL, picks the first example, explains it, selects a span by
// dragging over tokens, draws a box on the image, uploads a non-image, and checks at every step
// that what the page shows (numbers, token colours, heatmap pixels) equals what the JSON API
// answers for the same request. Saves OUT_DIR/viewer.png and OUT_DIR/viewer-box.png.
// Exits 1 with a message naming the failed check.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [base, outDir] = process.argv.slice(2);
if (!base || !outDir) {
  console.error('usage: node e2e/viewer.mjs BASE_URL OUT_DIR');
  process.exit(2);
}
const BASE = base.endsWith('/') ? base : `${base}/`;
const TIMEOUT = 180_000; // explanations on a busy 2-core CI machine
const TOL = 1e-6;

// Same colour map as crates/pairlens/src/render/colormap.rs, ported independently of the page.
const ANCHORS = [[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]];
const f32 = Math.fround;
function diverging(value, limit) {
  let t = 0;
  if (limit > 0 && Number.isFinite(value)) t = Math.min(1, Math.max(-1, f32(f32(value) / f32(limit))));
  const pos = f32(f32(f32(t + 1) * 0.5) * 4);
  const i = Math.min(Math.floor(pos), 3);
  const f = f32(pos - i);
  return [0, 1, 2].map((c) => Math.round(f32(f32(ANCHORS[i][c] * f32(1 - f)) + f32(ANCHORS[i + 1][c] * f))));
}
function symmetricLimit(values) {
  const m = values.filter(Number.isFinite).reduce((a, v) => Math.max(a, Math.abs(f32(v))), 0);
  return m > 0 ? m : 1;
}

let step = 'start';
function check(cond, msg) {
  if (!cond) throw new Error(`[${step}] ${msg}`);
}
function close(a, b, what) {
  check(typeof a === 'number' && Number.isFinite(a), `${what}: the page shows ${a}, not a number`);
  check(Math.abs(a - b) <= TOL * Math.max(1, Math.abs(b)), `${what}: page ${a} != API ${b}`);
}
function closeArrays(a, b, what) {
  check(Array.isArray(a) && a.length === b.length, `${what}: page has ${a && a.length} values, API ${b.length}`);
  a.forEach((v, i) => close(v, b[i], `${what}[${i}]`));
}
function sameColour(got, want, what) {
  const ok = got.length >= 3 && [0, 1, 2].every((c) => Math.abs(got[c] - want[c]) <= 1);
  check(ok, `${what}: colour rgb(${got.slice(0, 3)}) != expected rgb(${want})`);
}
function parseRgb(s) {
  const m = /rgba?\((\d+),\s*(\d+),\s*(\d+)/.exec(s);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [];
}

async function api(method, p, body) {
  const res = await fetch(new URL(p, BASE), {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => null);
  check(res.ok, `${method} ${p} answered ${res.status}: ${data && data.error}`);
  return data;
}

const state = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.pairlensState)));

/** The canvas pixel at the centre of every heatmap cell (the example is square: direct mapping). */
const cellPixels = (page) =>
  page.evaluate(() => {
    const cv = document.getElementById('heatmap');
    const [rows, cols] = window.pairlensState.grid;
    const data = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    const out = [];
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const x = Math.floor(((c + 0.5) * cv.width) / cols);
        const y = Math.floor(((r + 0.5) * cv.height) / rows);
        const o = 4 * (y * cv.width + x);
        out.push([data[o], data[o + 1], data[o + 2], data[o + 3]]);
      }
    }
    return out;
  });

const tokenChips = (page) =>
  page.$$eval('#tokens .token', (els) =>
    els.map((e) => ({
      index: Number(e.dataset.index),
      value: Number(e.dataset.value),
      bg: getComputedStyle(e).backgroundColor,
    })),
  );

/** Every cell's pixel must be the diverging colour of the heatmap value the API gave. */
function checkHeatmapPixels(pixels, values, what) {
  const limit = symmetricLimit(values);
  check(pixels.length === values.length, `${what}: ${pixels.length} cells drawn, ${values.length} values`);
  pixels.forEach((px, i) => {
    check(px[3] === 255, `${what}: cell ${i} is not drawn (alpha ${px[3]})`);
    sameColour(px, diverging(values[i], limit), `${what}: cell ${i} (value ${values[i]})`);
  });
}

function checkTokens(chips, values, what) {
  check(chips.length === values.length, `${what}: ${chips.length} tokens shown, API has ${values.length}`);
  const limit = symmetricLimit(values);
  chips.forEach((t, i) => {
    check(t.index === i, `${what}: token ${i} carries data-index ${t.index}`);
    close(t.value, values[i], `${what}: token ${i} data-value`);
    sameColour(parseRgb(t.bg), diverging(values[i], limit), `${what}: token ${i} background`);
  });
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  page.setDefaultTimeout(TIMEOUT);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') console.log(`  [page console] ${m.text()}`);
  });
  try {
    step = 'load';
    await page.goto(BASE);
    await page.waitForFunction(() => window.pairlensState && window.pairlensState.ready);
    const info = await api('GET', 'api/info');
    check(info.examples.length > 0, 'the server lists no examples');
    check(await page.isHidden('#error'), `an error is shown after loading: ${await page.textContent('#error')}`);

    step = 'thumbnails';
    // Every example thumbnail is shown once its image is decoded (not left a dark square).
    await page.waitForFunction(() =>
      [...document.querySelectorAll('.example')].every(
        (b) => b.classList.contains('loaded') && getComputedStyle(b.querySelector('img')).opacity === '1',
      ),
    );
    const thumbs = await page.$$eval('.example img', (els) => els.map((i) => i.naturalWidth));
    check(
      thumbs.length === info.examples.length && thumbs.every((w) => w > 0),
      `thumbnails: ${thumbs.length} shown for ${info.examples.length} examples, widths ${thumbs}`,
    );

    step = 'pick example';
    const ex = info.examples[0];
    await page.click('.example[data-index="0"]');
    await page.waitForFunction((id) => window.pairlensState.image === id, ex.image);
    check((await page.inputValue('#captions')) === ex.caption, 'picking the example did not fill in its caption');
    const second = 'a bag';
    await page.fill('#captions', `${ex.caption}\n${second}`);
    // Layers 1/1 split both towers in the middle: span heatmaps are clearer there (examples/README.md).
    await page.selectOption('#text-layer', '1');
    await page.selectOption('#image-layer', '1');
    await page.fill('#steps', '10');
    await page.selectOption('#mode', 'exclip');

    step = 'explain';
    await page.click('#explain');
    await page.waitForFunction(() => window.pairlensState.explanation && !document.body.dataset.busy);
    check(await page.isHidden('#error'), `explain failed: ${await page.textContent('#error')}`);
    check(await page.isHidden('#busy'), 'the busy indicator is still shown');
    const body = { image: ex.image, captions: [ex.caption, second], text_layer: 1, image_layer: 1, steps: 10, mode: 'exclip' };
    const ref = await api('POST', 'api/explain', body);
    check(ref.explanations.length === 2, `API gave ${ref.explanations.length} explanations for 2 captions`);
    check(ref.explanations.every((e) => e.cached), 'a repeated /api/explain was not answered from the cache');
    const e = ref.explanations[0];
    check((await page.$$('.tab')).length === 2, 'expected one tab per caption');
    for (const k of ['score', 'sum', 'residual']) {
      close(Number(await page.getAttribute(`#num-${k}`, 'data-value')), e[k], k);
    }
    for (const [k, v] of Object.entries(e.reference_terms)) {
      close(Number(await page.getAttribute(`#num-${k}`, 'data-value')), v, k);
    }
    close(Number(await page.getAttribute('#num-cls', 'data-value')), e.heatmap.cls, 'CLS');
    let st = await state(page);
    closeArrays(st.heatmap, e.heatmap.patches, 'whole-caption heatmap');
    check(st.tokenScores === null, 'token scores set before any box');
    const chips0 = await tokenChips(page);
    checkTokens(chips0, e.token_totals, 'token totals');
    const whole = await cellPixels(page);
    check(new Set(whole.map(String)).size > 1, 'the heatmap canvas is blank (one colour)');
    checkHeatmapPixels(whole, e.heatmap.patches, 'whole-caption heatmap');

    step = 'span';
    // Drag from token 2 to token 3 ("running shoe" in the first example's caption).
    const t2 = await page.locator('#tokens .token[data-index="2"]').boundingBox();
    const t3 = await page.locator('#tokens .token[data-index="3"]').boundingBox();
    await page.mouse.move(t2.x + t2.width / 2, t2.y + t2.height / 2);
    await page.mouse.down();
    await page.mouse.move(t2.x + t2.width, t2.y + t2.height / 2, { steps: 3 });
    await page.mouse.move(t3.x + t3.width / 2, t3.y + t3.height / 2, { steps: 5 });
    await page.mouse.up();
    await page.waitForFunction(() => {
      const s = window.pairlensState.span;
      return s && s[0] === 2 && s[1] === 4 && !document.body.dataset.busy;
    });
    st = await state(page);
    const span = await api('POST', 'api/span', { explanation: st.explanation, start: 2, end: 4 });
    closeArrays(st.heatmap, span.patches, 'span 2:4 heatmap');
    const changed = st.heatmap.some((v, i) => Math.abs(v - e.heatmap.patches[i]) > 1e-9);
    check(changed, 'the heatmap did not change after selecting a span');
    const spanPixels = await cellPixels(page);
    checkHeatmapPixels(spanPixels, span.patches, 'span heatmap');
    check(spanPixels.some((p, i) => String(p) !== String(whole[i])), 'the canvas did not change after selecting a span');
    const selected = await page.$$eval('#tokens .token.selected', (els) => els.map((x) => Number(x.dataset.index)));
    check(String(selected) === '2,3', `selected tokens shown as ${selected}, expected 2,3`);
    await page.mouse.move(5, 5);
    await page.screenshot({ path: path.join(outDir, 'viewer.png'), fullPage: true });

    step = 'box';
    // Drag a box around the running shoe, (0, 8) – (31, 25) in original pixels.
    const bb = await page.locator('#heatmap').boundingBox();
    const k = bb.width / 64;
    await page.mouse.move(bb.x + 0.5 * k, bb.y + 8.5 * k);
    await page.mouse.down();
    await page.mouse.move(bb.x + 16 * k, bb.y + 16 * k, { steps: 4 });
    await page.mouse.move(bb.x + 31 * k, bb.y + 25 * k, { steps: 4 });
    await page.mouse.up();
    await page.waitForFunction(() => window.pairlensState.tokenScores && !document.body.dataset.busy);
    check(await page.isHidden('#error'), `box failed: ${await page.textContent('#error')}`);
    st = await state(page);
    check(Array.isArray(st.box) && st.box.length === 4, `the page reports no box: ${st.box}`);
    const want = [0.5, 8.5, 31, 25];
    st.box.forEach((v, i) => check(Math.abs(v - want[i]) <= 1, `box ${st.box} is not where it was drawn (${want})`));
    const boxRef = await api('POST', 'api/box', { explanation: st.explanation, box: st.box });
    closeArrays(st.tokenScores, boxRef.scores, 'box token scores');
    const chips1 = await tokenChips(page);
    checkTokens(chips1, boxRef.scores, 'box token scores');
    check(chips1.some((t, i) => t.bg !== chips0[i].bg), 'no token colour changed after drawing a box');
    check(await page.isVisible('#box-outline'), 'the box outline is not shown');
    await page.mouse.move(5, 5);
    await page.screenshot({ path: path.join(outDir, 'viewer-box.png'), fullPage: true });

    step = 'second caption';
    await page.click('.tab[data-index="1"]');
    await page.waitForFunction(
      (id) => window.pairlensState.explanation !== id && window.pairlensState.tokenScores && !document.body.dataset.busy,
      st.explanation,
    );
    st = await state(page);
    closeArrays(st.heatmap, ref.explanations[1].heatmap.patches, 'second caption heatmap');
    const boxRef2 = await api('POST', 'api/box', { explanation: st.explanation, box: st.box });
    closeArrays(st.tokenScores, boxRef2.scores, 'second caption box scores');

    step = 'unknown words';
    // The note appears when an explanation lists words the model reads as <unk>, and only then.
    check(await page.isHidden('#unknown-note'), 'the unknown-words note is shown for known words');
    await page.route('**/api/explain', async (route) => {
      const res = await route.fetch();
      const data = await res.json();
      for (const x of data.explanations) x.unknown_words = ['shiny', 'red'];
      await route.fulfill({ response: res, json: data });
    });
    await page.click('#explain');
    await page.waitForFunction(() => !document.getElementById('unknown-note').hidden && !document.body.dataset.busy);
    const note = (await page.textContent('#unknown-note')).trim();
    check(note.includes('“shiny”, “red”') && note.includes('<unk>'), `unknown-words note: "${note}"`);
    await page.unroute('**/api/explain');

    step = 'drop an image';
    // Drag and drop a PNG (the second example's bytes) onto the drop zone: it is uploaded and shown.
    const png = Buffer.from(await (await fetch(new URL(`api/images/${info.examples[1].image}`, BASE))).arrayBuffer());
    const dt = await page.evaluateHandle((bytes) => {
      const d = new DataTransfer();
      d.items.add(new File([new Uint8Array(bytes)], 'dropped.png', { type: 'image/png' }));
      return d;
    }, [...png]);
    await page.dispatchEvent('#dropzone', 'drop', { dataTransfer: dt });
    await page.waitForFunction((id) => window.pairlensState.image === id && !document.body.dataset.busy, info.examples[1].image);
    check(await page.isHidden('#error'), `dropping a PNG failed: ${await page.textContent('#error')}`);
    check((await page.textContent('#image-line')).includes('dropped.png'), 'the dropped image is not named on the page');
    check((await state(page)).explanation === null, 'an explanation of the previous image is still shown');

    step = 'upload a non-image';
    await page.setInputFiles('#upload', {
      name: 'notes.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('this is not an image\n'),
    });
    await page.waitForSelector('#error', { state: 'visible' });
    const err = (await page.textContent('#error-text')).trim();
    check(err.length > 0 && err.includes('notes.txt'), `the error for a text upload is "${err}"`);

    check(pageErrors.length === 0, `JavaScript errors on the page: ${pageErrors.join('; ')}`);
    console.log(`ok: viewer e2e passed (screenshots in ${outDir})`);
  } catch (err) {
    await page.screenshot({ path: path.join(outDir, 'failure.png'), fullPage: true }).catch(() => {});
    throw err;
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(`FAIL viewer e2e: ${err && err.message ? err.message : err}`);
  process.exit(1);
});
