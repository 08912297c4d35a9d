/**
 * The admin status page: one static HTML document with inline CSS and script, no build step.
 * It polls /backends every two seconds and derives rates from the totals it sees change.
 */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>limpet status</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2330; background: #f6f7f9; }
  body { margin: 0 auto; max-width: 1100px; padding: 1.5rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
  .sub { color: #667; margin-bottom: 1rem; font-size: .9rem; }
  table { width: 100%; border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; }
  th, td { padding: .5rem .7rem; text-align: right; border-bottom: 1px solid #eceef2; font-variant-numeric: tabular-nums; }
  th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
  th { font-size: .72rem; text-transform: uppercase; letter-spacing: .04em; color: #667; }
  .state { display: inline-block; padding: .1rem .5rem; border-radius: 1rem; font-size: .8rem; font-weight: 600; }
  .state-up { background: #dcf5e3; color: #126b2e; }
  .state-down { background: #fde0de; color: #9b1c14; }
  .state-draining { background: #fff0cc; color: #7a5300; }
  .err, .url { font-size: .8rem; text-align: left; max-width: 18rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .err { color: #9b1c14; }
  .url { color: #8a90a0; }
  .source { font-size: .75rem; color: #2f6fdb; text-align: left; }
  .id { font-weight: 600; }
  tr.row-down td { background: #fff7f6; }
  tr.row-draining td { background: #fffbf0; }
  td[data-field="last-check"] { white-space: nowrap; color: #556; font-size: .85rem; }
  #summary.degraded { color: #9b1c14; font-weight: 600; }
  .chart { margin-top: 1.2rem; background: #fff; box-shadow: 0 1px 2px #0002; padding: .8rem; }
  .legend span { margin-right: 1rem; font-size: .85rem; }
  .legend i { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; margin-right: .3rem; vertical-align: -1px; }
  #status { font-size: .85rem; }
  .note { font-size: .8rem; color: #556; white-space: nowrap; }
</style>
</head>
<body>
<h1>limpet</h1>
<div class="sub"><span id="summary">loading…</span> · <span id="status"></span></div>
<table>
  <thead><tr><th>Backend</th><th>State</th><th>Weight</th><th>Pinned clients</th><th>In flight</th><th>WebSockets</th><th>Req/s</th><th>5xx/s</th><th>Remaps in</th><th>Last check</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<div class="chart">
  <div class="legend" id="legend"></div>
  <svg id="chart" viewBox="0 0 1000 200" preserveAspectRatio="none" width="100%" height="200" role="img" aria-label="requests per second per backend, last 5 minutes"></svg>
  <div class="sub">requests per second per backend, last 5 minutes</div>
</div>
<script>
const COLORS = ['#2f6fdb', '#e0702a', '#2a9d5c', '#9b3fc0', '#c23b55', '#1b9aaa', '#8a6d1c', '#555'];
const WINDOW = 150; // samples at 2 s = 5 minutes
const history = new Map(); // id -> [req/s]
let previous = null;

function esc(text) { return String(text).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';'); }

/** A draining backend's progress: live clients left and time to its deadline, or drained. */
function drainNote(b) {
  if (b.state !== 'draining') return '';
  if (b.drained) return '<div class="note" data-field="drain">drained: safe to stop</div>';
  let text = b.liveClients + ' live client' + (b.liveClients === 1 ? '' : 's') + ' left';
  if (b.drainDeadline) {
    const seconds = Math.round((Date.parse(b.drainDeadline) - Date.now()) / 1000);
    text += seconds > 0 ? ' · deadline in ' + (seconds >= 120 ? Math.round(seconds / 60) + ' min' : seconds + ' s') : ' · deadline passed';
  }
  return '<div class="note" data-field="drain">' + esc(text) + '</div>';
}

/** The configured weight, and the effective one while slow start ramps it up. */
function weightCell(b) {
  if (b.state !== 'up' || b.effectiveWeight >= b.weight) return String(b.weight);
  return b.weight + '<div class="note" data-field="ramp">ramping: ' + b.effectiveWeight.toFixed(2) + ' now</div>';
}

function render(backends, rates) {
  const rows = backends.map((b) => {
    const rate = rates.get(b.id) || { req: 0, err: 0 };
    const check = b.lastCheck ? (b.lastCheck.ok ? 'pass' : 'fail') + ' · ' + Math.round((Date.now() - b.lastCheck.at) / 1000) + ' s ago' : '–';
    return '<tr data-backend="' + esc(b.id) + '" class="row-' + esc(b.state) + '">' +
      '<td><div class="id">' + esc(b.id) + '</div><div class="url" title="' + esc(b.url) + '">' + esc(b.url) + '</div>' +
      (b.source ? '<div class="source" data-field="source">from ' + esc(b.source) + '</div>' : '') + '</td>' +
      '<td><span class="state state-' + esc(b.state) + '">' + esc(b.state) + '</span>' + (b.state === 'down' && b.lastError ? '<div class="err" title="' + esc(b.lastError) + '">' + esc(b.lastError) + '</div>' : '') + drainNote(b) + '</td>' +
      '<td data-field="weight">' + weightCell(b) + '</td><td data-field="sessions">' + b.sessions + '</td><td data-field="inflight">' + b.inflight + '</td><td data-field="websockets">' + b.websockets + '</td>' +
      '<td data-field="rps">' + rate.req.toFixed(1) + '</td><td data-field="errps">' + rate.err.toFixed(1) + '</td><td data-field="remaps-in">' + b.remapsIn + '</td><td data-field="last-check">' + esc(check) + '</td></tr>';
  });
  document.getElementById('rows').innerHTML = rows.join('');
  const up = backends.filter((b) => b.state !== 'down').length;
  const summary = document.getElementById('summary');
  summary.textContent = up + ' of ' + backends.length + ' backends serving';
  summary.className = up < backends.length ? 'degraded' : '';
  drawChart(backends);
}

function drawChart(backends) {
  let max = 1;
  for (const series of history.values()) for (const v of series) max = Math.max(max, v);
  const svg = document.getElementById('chart');
  const lines = backends.map((b, i) => {
    const series = history.get(b.id) || [];
    const points = series.map((v, j) => ((WINDOW - series.length + j) * 1000 / (WINDOW - 1)).toFixed(1) + ',' + (195 - (v / max) * 185).toFixed(1)).join(' ');
    return '<polyline fill="none" stroke-width="2" stroke="' + COLORS[i % COLORS.length] + '" points="' + points + '"/>';
  });
  svg.innerHTML = lines.join('');
  document.getElementById('legend').innerHTML = backends.map((b, i) => '<span><i style="background:' + COLORS[i % COLORS.length] + '"></i>' + esc(b.id) + '</span>').join('') + '<span>peak ' + max.toFixed(1) + ' req/s</span>';
}

async function poll() {
  try {
    const response = await fetch('backends', { cache: 'no-store' });
    const backends = await response.json();
    const now = performance.now();
    const rates = new Map();
    for (const b of backends) {
      let rate = { req: 0, err: 0 };
      if (previous && previous.byId.has(b.id)) {
        const before = previous.byId.get(b.id);
        const seconds = (now - previous.at) / 1000;
        rate = { req: Math.max(0, b.requests - before.requests) / seconds, err: Math.max(0, b.errors - before.errors) / seconds };
      }
      rates.set(b.id, rate);
      const series = history.get(b.id) || [];
      series.push(rate.req);
      if (series.length > WINDOW) series.shift();
      history.set(b.id, series);
    }
    previous = { at: now, byId: new Map(backends.map((b) => [b.id, b])) };
    render(backends, rates);
    document.getElementById('status').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (error) {
    document.getElementById('status').textContent = 'cannot reach limpet: ' + error;
  }
}
poll();
setInterval(poll, 2000);
</script>
</body>
</html>
`;
