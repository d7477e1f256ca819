// pairlens viewer: talks to the JSON API under /api/ (see the server crate) and draws the
// explanations. Vanilla JS, no build step: the file is embedded into the binary as is.
//
// Tests read `window.pairlensState` = {explanation: id | null, heatmap: [patch values],
// tokenScores: [box scores] | null, ...} and every coloured element's `data-value`.
'use strict';

(() => {
  // ---- colour map: a port of crates/pairlens/src/render/colormap.rs (f32 arithmetic) ----
  const ANCHORS = [
    [5, 48, 97],
    [67, 147, 195],
    [247, 247, 247],
    [214, 96, 77],
    [103, 0, 31],
  ];
  const f32 = Math.fround;

  /** Colour of `value` on [-limit, limit] (clamped), as [r, g, b] bytes. */
  function diverging(value, limit) {
    let t = 0;
    if (limit > 0 && Number.isFinite(value)) t = Math.min(1, Math.max(-1, f32(f32(value) / f32(limit))));
    const pos = f32(f32(f32(t + 1) * 0.5) * (ANCHORS.length - 1));
    const i = Math.min(Math.floor(pos), ANCHORS.length - 2);
    const f = f32(pos - i);
    const g = f32(1 - f);
    return [0, 1, 2].map((c) => Math.round(f32(f32(ANCHORS[i][c] * g) + f32(ANCHORS[i + 1][c] * f))));
  }

  /** max |v| over the finite values, or 1 when all are zero. */
  function symmetricLimit(values) {
    let m = 0;
    for (const v of values) if (Number.isFinite(v)) m = Math.max(m, Math.abs(f32(v)));
    return m > 0 ? m : 1;
  }

  const css = (rgb) => `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
  const inkFor = (bg) => (0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 140 ? '#000' : '#fff');
  const sci = (v) => (v >= 0 ? '+' : '') + v.toExponential(1);
  const fixed = (v, d = 6) => (v >= 0 ? '+' : '') + v.toFixed(d);

  // ---- DOM and state ----
  const $ = (id) => document.getElementById(id);
  const el = {
    error: $('error'), errorText: $('error-text'), busy: $('busy'), busyText: $('busy-text'),
    modelLine: $('model-line'), examples: $('examples'), upload: $('upload'), dropzone: $('dropzone'),
    imageLine: $('image-line'), captions: $('captions'), textLayer: $('text-layer'),
    imageLayer: $('image-layer'), steps: $('steps'), mode: $('mode'), explain: $('explain'),
    placeholder: $('placeholder'), result: $('result'), tabs: $('tabs'), tokens: $('tokens'),
    tokenLegend: $('token-legend'), stripTitle: $('strip-title'), clearSpan: $('clear-span'),
    unknownNote: $('unknown-note'),
    clearBox: $('clear-box'), heatmapTitle: $('heatmap-title'), stage: $('stage'), image: $('image'),
    canvas: $('heatmap'), boxOutline: $('box-outline'), colorbar: $('colorbar'),
    cbarMax: $('cbar-max'), cbarMin: $('cbar-min'), readout: $('readout'), opacity: $('opacity'),
  };

  const S = {
    info: null,
    image: null, // {id, name, width, height}
    explanations: [],
    settings: null,
    current: 0,
    span: null, // [start, end) token indices
    box: null, // [x0, y0, x1, y1] original-image pixels
    heat: null, // {cls, patches, grid}
    tokenScores: null,
    scale: 1, // displayed px per original px
    busy: 0,
    seq: { span: 0, box: 0, explain: 0 },
  };

  const state = {
    explanation: null,
    heatmap: [],
    tokenScores: null,
    // Beyond the contract, for tests and debugging:
    heatmapLimit: null,
    tokenLimit: null,
    cls: null,
    grid: null,
    span: null,
    box: null,
    image: null,
    ready: false,
  };
  window.pairlensState = state;

  function syncState() {
    const e = S.explanations[S.current];
    state.explanation = e ? e.id : null;
    state.heatmap = S.heat ? S.heat.patches.slice() : [];
    state.cls = S.heat ? S.heat.cls : null;
    state.grid = S.heat ? S.heat.grid.slice() : null;
    state.heatmapLimit = S.heat ? symmetricLimit(S.heat.patches) : null;
    state.tokenScores = S.tokenScores ? S.tokenScores.slice() : null;
    state.span = S.span ? S.span.slice() : null;
    state.box = S.box ? S.box.slice() : null;
    state.image = S.image ? S.image.id : null;
  }

  // ---- errors and busy indicator ----
  function showError(msg) {
    el.errorText.textContent = msg;
    el.error.hidden = false;
  }
  function clearError() {
    el.error.hidden = true;
    el.errorText.textContent = '';
  }
  $('error-close').addEventListener('click', clearError);

  async function busy(label, fn) {
    S.busy += 1;
    el.busyText.textContent = label;
    el.busy.hidden = false;
    document.body.dataset.busy = 'true';
    try {
      return await fn();
    } finally {
      S.busy -= 1;
      if (S.busy === 0) {
        el.busy.hidden = true;
        delete document.body.dataset.busy;
      }
    }
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  /** JSON API call; a non-2xx answer throws with the server's `error` message. */
  async function api(method, path, body, raw = false) {
    const opts = { method, headers: {} };
    if (body !== undefined) {
      opts.body = raw ? body : JSON.stringify(body);
      opts.headers['Content-Type'] = raw ? 'application/octet-stream' : 'application/json';
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(`cannot reach the pairlens server (${e.message})`, 0);
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : `${res.status} ${res.statusText}`;
      throw new ApiError(msg, res.status);
    }
    return data;
  }

  // ---- geometry: original image ↔ network input ↔ display ----
  /**
   * The model's preprocessing (CLIP): resize the shorter side to the input size, then centre-crop
   * (margin floored). Returns the scale factors and the crop window in resized pixels.
   */
  function geometry(w, h) {
    const size = S.info.image_size;
    const [ch, cw] = Array.isArray(size) ? size : [size, size];
    const target = Math.max(ch, cw);
    let rw, rh;
    if (w <= h) {
      rw = target;
      rh = Math.floor((target * h) / w);
    } else {
      rh = target;
      rw = Math.floor((target * w) / h);
    }
    const cx = rw >= cw ? Math.floor((rw - cw) / 2) : -Math.ceil((cw - rw) / 2);
    const cy = rh >= ch ? Math.floor((rh - ch) / 2) : -Math.ceil((ch - rh) / 2);
    return { sx: rw / w, sy: rh / h, cx, cy, cw, ch };
  }
  /** Network-input pixel → original-image pixel. */
  function inputToOriginal(g, x, y) {
    return [(x + g.cx) / g.sx, (y + g.cy) / g.sy];
  }
  /** Rectangle of patch (r, c) on the canvas, in canvas pixels, edges rounded (no gaps). */
  function cellRect(g, grid, r, c) {
    const [rows, cols] = grid;
    const pw = g.cw / cols;
    const ph = g.ch / rows;
    const [x0, y0] = inputToOriginal(g, c * pw, r * ph);
    const [x1, y1] = inputToOriginal(g, (c + 1) * pw, (r + 1) * ph);
    const k = S.scale;
    const X0 = Math.round(x0 * k);
    const Y0 = Math.round(y0 * k);
    return [X0, Y0, Math.round(x1 * k) - X0, Math.round(y1 * k) - Y0];
  }

  // ---- drawing ----
  function drawHeatmap() {
    const cv = el.canvas;
    const ctx = cv.getContext('2d');
    ctx.clearRect(0, 0, cv.width, cv.height);
    if (!S.heat || !S.image) return;
    const { patches, grid } = S.heat;
    const limit = symmetricLimit(patches);
    const g = geometry(S.image.width, S.image.height);
    for (let r = 0; r < grid[0]; r++) {
      for (let c = 0; c < grid[1]; c++) {
        const v = patches[r * grid[1] + c];
        const [x, y, w, h] = cellRect(g, grid, r, c);
        ctx.fillStyle = css(diverging(v, limit));
        ctx.fillRect(x, y, w, h);
      }
    }
    cv.dataset.limit = String(limit);
    cv.dataset.cls = String(S.heat.cls);
    drawColorbar(limit);
    $('num-cls').textContent = S.heat.cls === null ? 'none (no class token)' : fixed(S.heat.cls);
    $('num-cls').dataset.value = String(S.heat.cls);
  }

  function drawColorbar(limit) {
    const cv = el.colorbar;
    const h = Math.max(64, Math.round(el.canvas.height || 256));
    cv.height = h;
    cv.style.height = `${h}px`;
    const ctx = cv.getContext('2d');
    for (let y = 0; y < h; y++) {
      ctx.fillStyle = css(diverging(limit * (1 - (2 * (y + 0.5)) / h), limit));
      ctx.fillRect(0, y, cv.width, 1);
    }
    cv.dataset.limit = String(limit);
    el.cbarMax.textContent = sci(limit);
    el.cbarMin.textContent = sci(-limit);
  }

  function gradientCss() {
    const stops = [];
    for (let i = 0; i <= 8; i++) stops.push(css(diverging(1 - i / 4, 1)));
    return `linear-gradient(${stops.join(',')})`;
  }

  function tokenLabel(t) {
    if (t === '<|startoftext|>') return '<sot>';
    if (t === '<|endoftext|>') return '<eot>';
    return t.replace(/<\/w>$/, '');
  }

  function renderTokens() {
    const e = S.explanations[S.current];
    el.tokens.textContent = '';
    if (!e) return;
    const values = S.tokenScores || e.token_totals;
    const limit = symmetricLimit(values);
    e.tokens.forEach((tok, i) => {
      const wrap = document.createElement('span');
      wrap.className = 'tokwrap';
      const chip = document.createElement('span');
      const label = tokenLabel(tok);
      const bg = diverging(values[i], limit);
      chip.className = 'token' + (/^<.*>$/.test(label) ? ' special' : '');
      if (S.span && i >= S.span[0] && i < S.span[1]) chip.classList.add('selected');
      chip.dataset.index = String(i);
      chip.dataset.value = String(values[i]);
      chip.style.background = css(bg);
      chip.style.color = inkFor(bg);
      chip.textContent = label;
      chip.title = `token ${i} "${label}": ${values[i]}`;
      const val = document.createElement('span');
      val.className = 'tval';
      val.textContent = sci(values[i]);
      wrap.append(chip, val);
      el.tokens.append(wrap);
    });
    el.tokenLegend.innerHTML =
      `<span class="grad" style="background:${gradientCss()}"></span>` +
      `<span class="ticks"><span>${sci(limit)}</span><span>0</span><span>${sci(-limit)}</span></span>`;
    el.tokenLegend.dataset.limit = String(limit);
    if (S.box) {
      const b = S.box.map((v) => +v.toFixed(1));
      el.stripTitle.textContent = `tokens, coloured by their interaction with the box (${b[0]}, ${b[1]}) – (${b[2]}, ${b[3]}) px`;
    } else {
      el.stripTitle.textContent = 'tokens, coloured by their total interaction Σ over image tokens';
    }
    el.clearBox.hidden = !S.box;
    el.clearSpan.hidden = !S.span;
    renderUnknownWords(e);
  }

  /**
   * The caption's words the model does not know (the API's optional `unknown_words`, an array
   * of strings): they are read as <unk>, so the score ignores what they say.
   */
  function renderUnknownWords(e) {
    const words = Array.isArray(e.unknown_words)
      ? e.unknown_words.filter((w) => typeof w === 'string' && w.length > 0)
      : [];
    el.unknownNote.hidden = words.length === 0;
    el.unknownNote.textContent = '';
    if (!words.length) return;
    const list = words.map((w) => `“${w}”`).join(', ');
    const noun = words.length === 1 ? 'word' : 'words';
    el.unknownNote.append(
      `The model does not know the ${noun} ${list}: it reads ${words.length === 1 ? 'it' : 'them'} as `,
      Object.assign(document.createElement('code'), { textContent: '<unk>' }),
      '. ',
      Object.assign(document.createElement('code'), { textContent: 'pairlens vocab' }),
      ' lists the words it knows.',
    );
    el.unknownNote.dataset.words = JSON.stringify(words);
  }

  function renderHeatmapTitle() {
    const e = S.explanations[S.current];
    if (!e) return;
    if (S.span) {
      const words = e.tokens.slice(S.span[0], S.span[1]).map(tokenLabel).join(' ');
      el.heatmapTitle.textContent = `span ${S.span[0]}:${S.span[1]} “${words}”`;
    } else {
      el.heatmapTitle.textContent = 'whole caption';
    }
  }

  function setNum(id, value, text) {
    const td = $(id);
    td.textContent = text !== undefined ? text : fixed(value);
    if (typeof value === 'number') td.dataset.value = String(value);
    else td.removeAttribute('data-value');
  }

  function renderNumbers() {
    const e = S.explanations[S.current];
    if (!e) return;
    setNum('num-score', e.score);
    setNum('num-sum', e.sum);
    setNum('num-residual', e.residual);
    for (const k of ['text_vs_image_reference', 'text_reference_vs_image', 'reference_vs_reference']) {
      setNum(`num-${k}`, e.reference_terms[k]);
    }
    const st = S.settings || {};
    setNum('num-layers', undefined, `${st.text_layer} / ${st.image_layer}`);
    setNum('num-steps', st.steps, String(st.steps));
    $('num-mode').textContent = st.mode || '';
    setNum('num-seconds', e.seconds, `${e.seconds.toFixed(3)} s`);
    $('num-cached').textContent = e.cached ? 'answered from the cache' : 'computed now';
    $('num-cached').dataset.value = String(e.cached);
  }

  function renderTabs() {
    el.tabs.textContent = '';
    S.explanations.forEach((e, i) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'tab' + (i === S.current ? ' active' : '');
      b.dataset.index = String(i);
      b.title = e.caption;
      const cap = document.createElement('span');
      cap.className = 'cap';
      cap.textContent = e.caption;
      const sc = document.createElement('span');
      sc.className = 'sc';
      sc.textContent = e.score.toFixed(3);
      b.append(cap, sc);
      b.addEventListener('click', () => selectCaption(i));
      el.tabs.append(b);
    });
  }

  function renderAll() {
    const has = S.explanations.length > 0;
    el.result.hidden = !has;
    el.placeholder.hidden = has;
    if (!has) return;
    renderTabs();
    renderTokens();
    renderHeatmapTitle();
    renderNumbers();
    layoutStage();
    drawHeatmap();
    drawBox();
    syncState();
  }

  // ---- image display ----
  const MAX_SIDE = 448;
  function layoutStage() {
    if (!S.image) return;
    const { width: w, height: h } = S.image;
    let k = Math.min(MAX_SIDE / w, MAX_SIDE / h);
    if (k >= 1) k = Math.floor(k);
    S.scale = k;
    const dw = Math.round(w * k);
    const dh = Math.round(h * k);
    el.image.style.width = `${dw}px`;
    el.image.style.height = `${dh}px`;
    el.image.classList.toggle('pixelated', k >= 2);
    if (el.canvas.width !== dw || el.canvas.height !== dh) {
      el.canvas.width = dw;
      el.canvas.height = dh;
    }
    el.canvas.style.width = `${dw}px`;
    el.canvas.style.height = `${dh}px`;
    el.canvas.style.opacity = el.opacity.value;
  }

  function setImage(img) {
    const changed = !S.image || S.image.id !== img.id;
    S.image = img;
    el.image.src = `/api/images/${encodeURIComponent(img.id)}`;
    el.imageLine.textContent = `${img.name} · ${img.width}×${img.height} px`;
    for (const b of el.examples.querySelectorAll('.example')) {
      b.classList.toggle('active', b.dataset.image === img.id);
    }
    if (changed) {
      S.explanations = [];
      S.span = null;
      S.box = null;
      S.heat = null;
      S.tokenScores = null;
      renderAll();
      syncState();
    }
  }

  /** Natural size of an image served by the API (examples come without their size). */
  function imageSize(id) {
    return new Promise((resolve, reject) => {
      const im = new Image();
      im.onload = () => resolve([im.naturalWidth, im.naturalHeight]);
      im.onerror = () => reject(new Error(`could not load image ${id}`));
      im.src = `/api/images/${encodeURIComponent(id)}`;
    });
  }

  async function pickExample(i) {
    const ex = S.info.examples[i];
    clearError();
    try {
      const [w, h] = await imageSize(ex.image);
      setImage({ id: ex.image, name: ex.name, width: w, height: h });
      el.captions.value = ex.caption;
    } catch (e) {
      showError(e.message);
    }
  }

  async function upload(file) {
    if (!file) return;
    clearError();
    try {
      const max = S.info && S.info.max_upload_bytes;
      if (max && file.size > max) {
        throw new Error(`${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over the upload limit of ${(max / 1048576).toFixed(1)} MB`);
      }
      const bytes = await file.arrayBuffer();
      const r = await busy('uploading…', () => api('POST', '/api/images', bytes, true));
      setImage({ id: r.image, name: file.name, width: r.width, height: r.height });
    } catch (e) {
      showError(`Upload of ${file.name} failed: ${e.message}`);
    } finally {
      el.upload.value = '';
    }
  }

  // ---- explain, span, box ----
  function captionsFromInput() {
    return el.captions.value.split('\n').map((s) => s.trim()).filter((s) => s.length > 0);
  }

  async function explain() {
    clearError();
    if (!S.image) return showError('Pick an example or upload an image first.');
    const captions = captionsFromInput();
    if (captions.length === 0) return showError('Type a caption (one per line).');
    const steps = Number(el.steps.value);
    const body = {
      image: S.image.id,
      captions,
      text_layer: Number(el.textLayer.value),
      image_layer: Number(el.imageLayer.value),
      steps: Number.isFinite(steps) ? Math.round(steps) : undefined,
      mode: el.mode.value,
    };
    const seq = ++S.seq.explain;
    el.explain.disabled = true;
    try {
      const r = await busy(captions.length > 1 ? `explaining ${captions.length} captions…` : 'explaining…', () =>
        api('POST', '/api/explain', body),
      );
      if (seq !== S.seq.explain) return;
      const prevCaption = S.explanations[S.current] && S.explanations[S.current].caption;
      S.explanations = r.explanations;
      S.settings = r.settings;
      const keep = S.explanations.findIndex((e) => e.caption === prevCaption);
      await selectCaption(keep >= 0 ? keep : 0);
    } catch (e) {
      showError(e.message);
    } finally {
      if (seq === S.seq.explain) el.explain.disabled = false;
    }
  }

  /** Show caption i: its whole-caption heatmap and token totals (box re-queried if drawn). */
  async function selectCaption(i) {
    S.current = i;
    const e = S.explanations[i];
    S.span = null;
    S.heat = { cls: e.heatmap.cls, patches: e.heatmap.patches, grid: e.grid };
    S.tokenScores = null;
    renderAll();
    if (S.box) await queryBox(S.box);
  }

  async function querySpan(start, end) {
    const e = S.explanations[S.current];
    if (!e) return;
    const seq = ++S.seq.span;
    try {
      const r = await busy('updating the heatmap…', () => api('POST', '/api/span', { explanation: e.id, start, end }));
      if (seq !== S.seq.span || e !== S.explanations[S.current]) return;
      S.span = [start, end];
      S.heat = { cls: r.cls, patches: r.patches, grid: r.grid };
      renderTokens();
      renderHeatmapTitle();
      drawHeatmap();
      syncState();
    } catch (err) {
      showError(err.message);
    }
  }

  function clearSpan() {
    const e = S.explanations[S.current];
    if (!e) return;
    S.seq.span++;
    S.span = null;
    S.heat = { cls: e.heatmap.cls, patches: e.heatmap.patches, grid: e.grid };
    renderTokens();
    renderHeatmapTitle();
    drawHeatmap();
    syncState();
  }

  async function queryBox(box) {
    const e = S.explanations[S.current];
    if (!e) return;
    const seq = ++S.seq.box;
    S.box = box;
    drawBox();
    try {
      const r = await busy('scoring tokens against the box…', () => api('POST', '/api/box', { explanation: e.id, box }));
      if (seq !== S.seq.box || e !== S.explanations[S.current]) return;
      S.tokenScores = r.scores;
      renderTokens();
      syncState();
    } catch (err) {
      if (seq !== S.seq.box) return;
      S.box = null;
      S.tokenScores = null;
      drawBox();
      renderTokens();
      syncState();
      showError(err.message);
    }
  }

  function clearBox() {
    S.seq.box++;
    S.box = null;
    S.tokenScores = null;
    drawBox();
    renderTokens();
    syncState();
  }

  function drawBox(b = S.box) {
    if (!b) {
      el.boxOutline.hidden = true;
      return;
    }
    const k = S.scale;
    el.boxOutline.hidden = false;
    el.boxOutline.style.left = `${b[0] * k - 2}px`;
    el.boxOutline.style.top = `${b[1] * k - 2}px`;
    el.boxOutline.style.width = `${(b[2] - b[0]) * k + 4}px`;
    el.boxOutline.style.height = `${(b[3] - b[1]) * k + 4}px`;
  }

  // ---- pointer interaction: tokens ----
  let tokenDrag = null; // {anchor, start, end}
  function tokenAt(ev) {
    const t = document.elementFromPoint(ev.clientX, ev.clientY);
    const chip = t && t.closest ? t.closest('.token') : null;
    return chip && el.tokens.contains(chip) ? Number(chip.dataset.index) : null;
  }
  function markSelection(start, end) {
    for (const chip of el.tokens.querySelectorAll('.token')) {
      const i = Number(chip.dataset.index);
      chip.classList.toggle('selected', i >= start && i < end);
    }
  }
  el.tokens.addEventListener('pointerdown', (ev) => {
    const i = tokenAt(ev);
    if (i === null || ev.button !== 0) return;
    ev.preventDefault();
    tokenDrag = { anchor: i, start: i, end: i + 1 };
    markSelection(i, i + 1);
  });
  window.addEventListener('pointermove', (ev) => {
    if (!tokenDrag) return;
    const i = tokenAt(ev);
    if (i === null) return;
    tokenDrag.start = Math.min(tokenDrag.anchor, i);
    tokenDrag.end = Math.max(tokenDrag.anchor, i) + 1;
    markSelection(tokenDrag.start, tokenDrag.end);
  });
  window.addEventListener('pointerup', () => {
    if (!tokenDrag) return;
    const { start, end } = tokenDrag;
    tokenDrag = null;
    clearError();
    querySpan(start, end);
  });

  // ---- pointer interaction: box on the image, hover readout ----
  let boxDrag = null; // {x0, y0, x1, y1} display px
  function stagePoint(ev) {
    const r = el.canvas.getBoundingClientRect();
    const x = Math.min(Math.max(ev.clientX - r.left, 0), r.width);
    const y = Math.min(Math.max(ev.clientY - r.top, 0), r.height);
    return [x, y];
  }
  el.stage.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0 || !S.explanations.length) return;
    ev.preventDefault();
    el.stage.setPointerCapture(ev.pointerId);
    const [x, y] = stagePoint(ev);
    boxDrag = { x0: x, y0: y, x1: x, y1: y };
  });
  el.stage.addEventListener('pointermove', (ev) => {
    const [x, y] = stagePoint(ev);
    if (boxDrag) {
      boxDrag.x1 = x;
      boxDrag.y1 = y;
      const k = S.scale;
      drawBox([
        Math.min(boxDrag.x0, x) / k,
        Math.min(boxDrag.y0, y) / k,
        Math.max(boxDrag.x0, x) / k,
        Math.max(boxDrag.y0, y) / k,
      ]);
    }
    readout(x, y);
  });
  el.stage.addEventListener('pointerleave', () => {
    if (!boxDrag) el.readout.innerHTML = '&nbsp;';
  });
  const endBox = (ev) => {
    if (!boxDrag) return;
    const d = boxDrag;
    boxDrag = null;
    if (ev.type === 'pointercancel') return drawBox();
    const k = S.scale;
    const round2 = (v) => Math.round(v * 100) / 100;
    const box = [
      round2(Math.min(d.x0, d.x1) / k),
      round2(Math.min(d.y0, d.y1) / k),
      round2(Math.max(d.x0, d.x1) / k),
      round2(Math.max(d.y0, d.y1) / k),
    ];
    if (Math.abs(d.x1 - d.x0) < 3 || Math.abs(d.y1 - d.y0) < 3) {
      // A click, not a drag: clears the box.
      if (S.box) clearBox();
      else drawBox();
      return;
    }
    clearError();
    queryBox(box);
  };
  el.stage.addEventListener('pointerup', endBox);
  el.stage.addEventListener('pointercancel', endBox);

  function readout(x, y) {
    if (!S.heat || !S.image) return;
    const k = S.scale;
    const g = geometry(S.image.width, S.image.height);
    const ox = x / k;
    const oy = y / k;
    const ix = ox * g.sx - g.cx;
    const iy = oy * g.sy - g.cy;
    const [rows, cols] = S.heat.grid;
    const c = Math.floor(ix / (g.cw / cols));
    const r = Math.floor(iy / (g.ch / rows));
    let text = `(${ox.toFixed(0)}, ${oy.toFixed(0)}) px`;
    if (r >= 0 && r < rows && c >= 0 && c < cols) {
      text += ` · patch row ${r}, col ${c}: ${fixed(S.heat.patches[r * cols + c], 5)}`;
    } else {
      text += ' · outside the crop the model sees';
    }
    el.readout.textContent = text;
  }

  // ---- other controls ----
  el.clearSpan.addEventListener('click', clearSpan);
  el.clearBox.addEventListener('click', clearBox);
  el.explain.addEventListener('click', explain);
  el.captions.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      explain();
    }
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape' || ev.target === el.captions) return;
    if (S.span) clearSpan();
    if (S.box) clearBox();
  });
  el.opacity.addEventListener('input', () => {
    el.canvas.style.opacity = el.opacity.value;
  });
  el.upload.addEventListener('change', () => upload(el.upload.files[0]));
  for (const zone of [el.dropzone, el.stage, el.placeholder]) {
    zone.addEventListener('dragover', (ev) => {
      ev.preventDefault();
      zone.classList.add('over');
    });
    zone.addEventListener('dragleave', () => zone.classList.remove('over'));
    zone.addEventListener('drop', (ev) => {
      ev.preventDefault();
      zone.classList.remove('over');
      const f = ev.dataTransfer && ev.dataTransfer.files[0];
      if (f) upload(f);
    });
  }
  // A file dropped anywhere else must not navigate away from the page.
  window.addEventListener('dragover', (ev) => ev.preventDefault());
  window.addEventListener('drop', (ev) => ev.preventDefault());

  // ---- start ----
  function fillLayers(select, n, def, lastName = 'last') {
    select.textContent = '';
    for (let i = 0; i < n; i++) {
      const o = document.createElement('option');
      o.value = String(i);
      o.textContent = i === n - 1 ? `${i} (${lastName})` : String(i);
      if (i === def) o.selected = true;
      select.append(o);
    }
  }

  async function start() {
    try {
      const info = await api('GET', '/api/info');
      S.info = info;
      const d = info.defaults || {};
      fillLayers(el.textLayer, info.text_layers, d.text_layer);
      if (info.pooling_head) {
        fillLayers(el.imageLayer, info.image_layers + 1, d.image_layer, 'pooling head');
      } else {
        fillLayers(el.imageLayer, info.image_layers, d.image_layer);
      }
      el.steps.value = String(d.steps || 10);
      el.mode.value = d.mode || 'exclip';
      const model = info.model === 'built-in' ? 'the built-in Fashion-MNIST model' : info.model;
      el.modelLine.innerHTML = '';
      el.modelLine.append(
        'model ',
        Object.assign(document.createElement('code'), { textContent: model }),
        ` · input ${info.image_size} px, ${info.grid[0]}×${info.grid[1]} patches of ${info.patch} px`,
      );
      if (info.max_upload_bytes) {
        $('upload-limit').textContent = `PNG, JPEG or WebP, up to ${(info.max_upload_bytes / 1048576).toFixed(0)} MB`;
      }
      el.examples.textContent = '';
      info.examples.forEach((ex, i) => {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'example';
        b.dataset.index = String(i);
        b.dataset.image = ex.image;
        b.title = `${ex.name}: ${ex.caption}`;
        const im = document.createElement('img');
        im.alt = ex.name;
        // Shown only once decoded: a thumbnail painted while its pixels were still on the way
        // stayed the button's dark background until something else repainted the page.
        im.addEventListener('load', () => {
          const decoded = typeof im.decode === 'function' ? im.decode() : Promise.resolve();
          decoded.catch(() => {}).then(() => b.classList.add('loaded'));
        });
        im.addEventListener('error', () => {
          b.classList.add('failed');
          b.title = `${ex.name}: the image could not be loaded`;
        });
        im.src = `/api/images/${encodeURIComponent(ex.image)}`;
        b.append(im);
        b.addEventListener('click', () => pickExample(i));
        el.examples.append(b);
      });
      if (info.examples.length) await pickExample(0);
    } catch (e) {
      showError(`Could not load /api/info: ${e.message}`);
    } finally {
      state.ready = true;
    }
  }

  window.addEventListener('resize', () => drawBox());
  start();
})();
