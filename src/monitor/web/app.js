// gannf-dash's page. Everything it shows comes from the JSON API of the same
// server (docs/dashboard.md); every string that a worker chose (names, logins,
// back ends, GPU names) or the coordinator wrote (rejection reasons) is set
// with textContent, never parsed as HTML. Live: one EventSource says when a
// new snapshot exists, and the panels are fetched again; without it (an old
// proxy, too many pages open) the page polls every 5 s.
'use strict';
(() => {
  const dash = {
    generation: null, mode: 'connecting', events: 0, refreshes: 0, errors: [],
    charts: {}, grids: null, follow: true, runId: null, status: null, clock: null, by: 'worker',
  };
  window.gannfDash = dash;  // for the tests, and for the curious in the console
  window.addEventListener('error', (e) => dash.errors.push(String(e.message)));

  const $ = (id) => document.getElementById(id);
  const put = (id, v) => { $(id).textContent = v == null ? '' : String(v); };
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text != null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  const nf = new Intl.NumberFormat('en-US');
  const int = (n) => (n == null ? '–' : nf.format(Math.round(n)));
  const num = (x, d) => (x == null ? '–' : x.toFixed(d));
  const rate = (x) => (x == null ? '–' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const sig = (x) => (x == null ? '–' : x.toPrecision(3));
  const gib = (b) => (b == null ? '–' : (b / 2 ** 30).toFixed(1) + ' GiB');
  const two = (n) => String(n).padStart(2, '0');
  function duration(s) {
    if (s == null || !isFinite(s)) return '–';
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h > 0) return h + ' h ' + two(m) + ' min';
    if (m > 0) return m + ' min ' + two(r) + ' s';
    return r + ' s';
  }
  // The database's clock, advanced by the time since the status arrived.
  const now = () => (dash.clock ? dash.clock.db + (performance.now() / 1000 - dash.clock.local) : Date.now() / 1000);
  const ago = (t) => (t ? duration(now() - t) + ' ago' : '–');

  async function getJSON(path) {
    const r = await fetch(path, { cache: 'no-store', credentials: 'same-origin' });
    if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
    return r.json();
  }

  // ------------------------------------------------------------ charts
  const colours = { d: '#c0392b', g: '#1f5fa8', real: '#1e8449', fake: '#7d3c98', rate: '#d35400', workers: '#566573' };
  function lineChart(canvas, datasets, scales) {
    if (!window.Chart) return null;
    return new Chart(canvas, {
      type: 'line',
      data: { datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
        spanGaps: true,
        elements: { point: { radius: 0, hitRadius: 6 }, line: { borderWidth: 2, tension: 0 } },
        interaction: { mode: 'nearest', axis: 'x', intersect: false },
        plugins: { legend: { labels: { boxWidth: 14, font: { size: 14 } } } },
        scales: Object.assign({
          x: { type: 'linear', title: { display: true, text: 'update' }, ticks: { precision: 0 } },
        }, scales),
      },
    });
  }
  const series = (label, colour, extra) =>
    Object.assign({ label, data: [], borderColor: colour, backgroundColor: colour }, extra || {});
  function makeCharts() {
    dash.charts.loss = lineChart($('loss-chart'),
      [series('D loss', colours.d), series('G loss', colours.g)], { y: { title: { display: true, text: 'BCE loss' } } });
    dash.charts.score = lineChart($('score-chart'),
      [series('D(x)', colours.real), series('D(G(z))', colours.fake)], { y: { min: 0, max: 1 } });
    dash.charts.throughput = lineChart($('throughput-chart'),
      [series('images/s', colours.rate, { yAxisID: 'y' }),
       series('active workers', colours.workers, { yAxisID: 'y1', stepped: true, borderDash: [6, 4] })],
      { y: { min: 0, title: { display: true, text: 'images/s' } },
        y1: { min: 0, position: 'right', grid: { drawOnChartArea: false }, ticks: { precision: 0 },
              title: { display: true, text: 'workers' } } });
    if (!window.Chart) dash.errors.push('Chart.js did not load: the charts are missing');
  }
  function setData(chart, xs, ...ys) {
    if (!chart) return;
    // Points are drawn only where there are few enough to tell apart.
    chart.options.elements.point.radius = xs.length <= 60 ? 3 : 0;
    ys.forEach((y, k) => {
      chart.data.datasets[k].data = xs.map((x, i) => ({ x, y: y[i] }));
    });
    chart.update();
  }

  // ------------------------------------------------------------ panels
  function renderStatus(s) {
    dash.status = s;
    dash.clock = { db: s.now, local: performance.now() / 1000 };
    const db = $('database');
    db.hidden = s.database.ok;
    db.textContent = s.database.ok ? '' : 'the database cannot be read: ' + s.database.error;
    const r = s.run;
    if (!r) {
      put('state', 'no run');
      $('state').className = 'badge none';
      put('model', 'no run in this database yet (gannf-coord init makes one)');
      dash.runId = null;
      return;
    }
    dash.runId = r.run_id;
    put('state', r.state);
    $('state').className = 'badge ' + r.state;
    put('model', r.model.describe + ' · ' + r.dataset + ' · ' + int(r.dataset_size) + ' images');
    put('iteration', int(r.iteration));
    put('iteration-of', 'of ≈ ' + int(r.iterations_total));
    put('epoch', r.epoch + ' / ' + r.epochs);
    $('epoch-bar').style.width = (100 * r.epoch_progress).toFixed(1) + '%';
    put('images', int(r.images_processed));
    put('images-of', r.images_total ? 'of ' + int(r.images_total) + ' (' + (100 * r.images_processed / r.images_total).toFixed(1) + '%)' : '');
    put('rate', rate(r.images_per_second));
    put('tflops', r.tflops == null ? '' : sig(r.tflops) + ' TFLOP/s');
    put('workers', r.active_workers);
    put('workers-of', r.registered_workers + ' registered');
    const l = r.latest;
    put('losses-now', l ? 'D ' + num(l.loss_d, 3) + ' · G ' + num(l.loss_g, 3) : '–');
    put('scores-now', l ? 'D(x) ' + num(l.d_real, 2) + ' · D(G(z)) ' + num(l.d_fake, 2) + ' · acc ' + num(l.d_accuracy, 2) : '');
    put('footer', 'run ' + r.run_id + ' · ' + r.images_per_unit + ' images per unit, ' + r.units_per_update +
      ' units per update · ' + sig(r.flops_per_image / 1e9) + ' GFLOP per image');
    tick();
  }
  function tick() {
    const r = dash.status && dash.status.run;
    if (r) {
      const elapsed = r.state === 'running' ? r.elapsed_seconds + (now() - dash.status.now) : r.elapsed_seconds;
      put('elapsed', duration(elapsed));
      put('eta', r.eta_seconds == null ? '' : 'about ' + duration(r.eta_seconds) + ' to go');
    }
    document.querySelectorAll('[data-seen]').forEach((e) => { e.textContent = ago(+e.dataset.seen); });
  }

  function renderLosses(d) {
    put('loss-note', d.bucket > 1 ? '(mean of ' + d.bucket + ' updates per point)' : '');
    setData(dash.charts.loss, d.step, d.loss_d, d.loss_g);
    setData(dash.charts.score, d.step, d.d_real, d.d_fake);
  }

  function renderThroughput(d) {
    dash.throughput = d;
    const unit = $('throughput-unit').value;
    const c = dash.charts.throughput;
    if (c) {
      c.data.datasets[0].label = unit === 'tflops' ? 'TFLOP/s' : 'images/s';
      c.options.scales.y.title.text = c.data.datasets[0].label;
    }
    setData(c, d.step, d[unit], d.active_workers);
  }

  function renderSamples(d) {
    dash.grids = d;
    const sc = $('scrubber');
    sc.max = Math.max(0, d.count - 1);
    sc.disabled = d.count === 0;
    if (d.count === 0) {
      $('sample').hidden = true;
      $('no-sample').hidden = false;
      put('sample-label', '');
      return;
    }
    if (dash.follow || +sc.value > d.count - 1) sc.value = d.count - 1;
    showGrid(+sc.value);
  }
  function showGrid(i) {
    const d = dash.grids;
    if (!d || !d.count) return;
    const img = $('sample');
    const src = '/samples/' + d.iteration[i] + '.png?run=' + encodeURIComponent(dash.runId || '');
    if (img.getAttribute('src') !== src) img.src = src;
    img.hidden = false;
    $('no-sample').hidden = true;
    put('sample-label', 'iteration ' + int(d.iteration[i]) + ', epoch ' + d.epoch[i] +
      (i === d.count - 1 ? ' (latest)' : ' (' + (i + 1) + ' of ' + d.count + ')'));
  }

  function renderResources(d) {
    const t = d.totals;
    const box = $('totals');
    box.replaceChildren();
    const backends = Object.entries(t.backends).map(([k, v]) => v + ' ' + k).join(', ') || 'none';
    [['workers', t.workers], ['CPU cores', int(t.cpu_cores)], ['RAM', gib(t.ram_bytes)],
     ['GPUs', t.gpus], ['GPU memory', gib(t.gpu_memory_bytes)], ['back ends', backends]].forEach(([k, v]) => {
      const f = el('div', null, 'total');
      f.append(el('span', v, 'value'), el('span', k, 'label'));
      box.append(f);
    });
    const body = $('resources').tBodies[0];
    body.replaceChildren();
    d.workers.forEach((w) => {
      const tr = el('tr');
      [w.login, w.name, w.backend || '–', w.cpu_cores == null ? '–' : w.cpu_cores, gib(w.ram_bytes),
       w.gpu_name || '–', w.gpu_name ? gib(w.gpu_memory_bytes) : '–'].forEach((v) => tr.append(el('td', v)));
      body.append(tr);
    });
  }

  function renderLeaderboard(d) {
    const body = $('leaderboard').tBodies[0];
    body.replaceChildren();
    d.rows.forEach((r) => {
      const tr = el('tr', null, r.active ? '' : 'inactive');
      tr.append(el('td', r.rank), el('td', r.login), el('td', r.name == null ? r.worker_ids.length + ' workers' : r.name),
        el('td', r.backend || '–'), el('td', int(r.units), 'n'), el('td', int(r.images), 'n'),
        el('td', (100 * r.share).toFixed(1) + '%', 'n'), el('td', rate(r.images_per_second), 'n'));
      const rej = el('td', int(r.rejected), 'n');
      if (r.reasons.length) {
        const list = el('ul', null, 'reasons');
        r.reasons.forEach((x) => list.append(el('li', x.reason + (x.count > 1 ? ' (' + x.count + '×)' : ''))));
        rej.append(list);
      }
      const strikes = r.strikes ? ' (' + r.strikes + (r.strikes > 1 ? ' strikes)' : ' strike)') : '';
      tr.append(rej, el('td', (r.quarantined == null ? '–' : r.quarantined ? 'yes' : 'no') + strikes));
      // Units taken off the login unfinished (sql/0023), the last one's reason.
      const taken = el('td', int(r.units_taken));
      if (r.units_taken > 0) {
        const why = {late: 'late', 'hold bound': 'held too long', lease: 'lease passed', closed: 'update closed'};
        let last = 'last: ' + (why[r.taken_why] || r.taken_why || '?');
        if (r.taken_bound != null) last += ' (' + rate(r.taken_bound) + ' s allowed)';
        const list = el('ul', null, 'reasons taken');
        list.append(el('li', last));
        if (r.held_to_one) list.append(el('li', 'one unit at a time'));
        taken.append(list);
      }
      tr.append(taken);
      const seen = el('td', ago(r.last_seen));
      seen.dataset.seen = r.last_seen;
      tr.append(seen);
      body.append(tr);
    });
  }

  // ------------------------------------------------------------ refresh
  let running = false, again = false;
  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        const points = Math.max(100, Math.min(2000, Math.round($('loss-chart').clientWidth || 1000)));
        const [status, losses, throughput, samples, resources, board] = await Promise.all([
          getJSON('/api/status'), getJSON('/api/losses?points=' + points), getJSON('/api/throughput?points=' + points),
          getJSON('/api/samples'), getJSON('/api/resources'), getJSON('/api/leaderboard?by=' + dash.by)]);
        renderStatus(status);
        renderLosses(losses);
        renderThroughput(throughput);
        renderSamples(samples);
        renderResources(resources);
        renderLeaderboard(board);
        dash.generation = status.generation;
        dash.refreshes++;
        document.body.dataset.generation = String(status.generation);
      } while (again);
    } catch (e) {
      dash.errors.push(String(e));
      $('database').hidden = false;
      $('database').textContent = 'the dashboard cannot be reached (' + e.message + '); retrying';
    } finally {
      running = false;
    }
  }

  function setMode(m) {
    dash.mode = m;
    put('live', m);
  }
  function poll(why) {
    setMode(why);
    if (!dash.pollTimer) dash.pollTimer = setInterval(refresh, 5000);
  }
  function live() {
    if (!('EventSource' in window)) return poll('polling every 5 s');
    const es = new EventSource('/api/events');
    let failures = 0;
    es.addEventListener('update', (e) => {
      dash.events++;
      failures = 0;
      setMode('live');
      let m = null;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m.generation !== dash.generation) refresh();
    });
    es.onopen = () => setMode('live');
    es.onerror = () => {
      failures++;
      if (es.readyState === EventSource.CLOSED || failures >= 3) {
        es.close();
        poll('polling every 5 s (live updates unavailable)');
      } else {
        setMode('reconnecting');
      }
    };
    dash.source = es;
  }

  // ------------------------------------------------------------ controls
  function controls() {
    $('scrubber').addEventListener('input', (e) => {
      dash.follow = +e.target.value === +e.target.max;
      showGrid(+e.target.value);
    });
    $('latest-button').addEventListener('click', () => {
      dash.follow = true;
      if (dash.grids) { $('scrubber').value = dash.grids.count - 1; showGrid(dash.grids.count - 1); }
    });
    $('timelapse-button').addEventListener('click', () => {
      const t = $('timelapse');
      if (t.hidden) { t.src = '/timelapse.png'; t.hidden = false; } else { t.hidden = true; t.removeAttribute('src'); }
    });
    $('throughput-unit').addEventListener('change', () => { if (dash.throughput) renderThroughput(dash.throughput); });
    $('leaderboard-by').addEventListener('change', (e) => {
      dash.by = e.target.value;
      $('csv').href = '/leaderboard.csv' + (dash.by === 'login' ? '?by=login' : '');
      refresh();
    });
  }

  makeCharts();
  controls();
  refresh().then(live);
  setInterval(tick, 1000);
})();
