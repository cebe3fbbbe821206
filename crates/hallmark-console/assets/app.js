// The Hallmark console: pages over the JSON API under /api/v1/.
// Everything shown is built with DOM nodes and textContent (never HTML from
// data), and every call goes to this origin.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    csrf: null,
    page: null,
    graph: null,      // the last /api/v1/graph answer
    dryRun: null,     // edges of the last dry-run, keyed like the map's edges
    tailTimer: null,
    lastFlowId: 0,
  };
  // What tests and curious operators can reach from the devtools console.
  const exposed = { state: state, cy: null, ready: false };
  window.hallmark = exposed;

  // ------------------------------------------------------------ API calls
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = { 'Accept': 'application/json' };
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    if (opts.method && opts.method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
    const r = await fetch(path, {
      method: opts.method || 'GET',
      headers: headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      credentials: 'same-origin',
    });
    let body = null;
    const text = await r.text();
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = { error: text }; }
    if (r.status === 401 && !opts.login) { showLogin(body && body.error); throw new ApiError(401, 'not logged in'); }
    if (!r.ok) throw new ApiError(r.status, (body && body.error) || r.statusText);
    return body;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of params) if (v !== undefined && v !== null && String(v) !== '') q.append(k, v);
    const s = q.toString();
    return s ? '?' + s : '';
  }

  // ------------------------------------------------------------ DOM helpers
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }

  function table(columns, rows, onRow) {
    if (!rows.length) return el('p', { class: 'empty', text: 'Nothing to show.' });
    const head = el('tr', {}, ...columns.map((c) => el('th', { text: c[0] })));
    const body = rows.map((r) => {
      const tr = el('tr', {}, ...columns.map((c) => {
        const v = c[1](r);
        return el('td', {}, v instanceof Node ? v : (v === undefined || v === null || v === '' ? '-' : String(v)));
      }));
      if (onRow) { tr.classList.add('clickable'); tr.addEventListener('click', () => onRow(r)); }
      return tr;
    });
    return el('table', {}, el('thead', {}, head), el('tbody', {}, ...body));
  }

  function put(id, node) { const c = $(id); c.replaceChildren(node); }

  function showError(id, err) {
    put(id, el('p', { class: 'error', role: 'alert', text: err.message || String(err) }));
  }

  // Unix ms as UTC; 0 is blank, and an instant beyond what a Date holds
  // (a key that never expires) is `never`.
  const time = (ms) => {
    if (!ms) return '';
    const d = new Date(ms);
    return isNaN(d.getTime()) ? 'never' : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  };
  const secs = (s) => (s ? time(s * 1000) : '');
  const bytes = (n) => {
    if (n < 1024) return n + ' B';
    const u = ['KiB', 'MiB', 'GiB', 'TiB']; let i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
    return n.toFixed(1) + ' ' + u[i];
  };
  const verdictTag = (v) => el('span', { class: 'verdict ' + (v || 'none'), text: v || 'no verdict' });

  function endpointName(e) {
    if (!e) return '';
    switch (e.kind) {
      case 'workload': return (e.spiffe_ids && e.spiffe_ids[0]) || (e.context + '/' + (e.name || e.container_id));
      case 'node': return e.spiffe_id || ('node:' + e.context + '/' + e.node);
      case 'external': return 'external:' + e.network;
      case 'unattributed': return 'unattributed:' + e.reason;
      default: return JSON.stringify(e);
    }
  }

  // ------------------------------------------------------------ login
  function showLogin(why) {
    stopTail();
    for (const p of document.querySelectorAll('.page')) p.hidden = true;
    $('nav').hidden = true; $('logout').hidden = true; $('whoami').textContent = '';
    $('login').hidden = false;
    $('login-error').textContent = why && state.csrf !== null ? why : '';
    state.csrf = null;
  }

  async function login(ev) {
    ev.preventDefault();
    try {
      const s = await api('/api/v1/session', { method: 'POST', body: { token: $('login-token').value }, login: true });
      $('login-token').value = '';
      state.csrf = s.csrf_token;
      await start();
    } catch (e) {
      $('login-error').textContent = e.message;
    }
  }

  async function logout() {
    try { await api('/api/v1/session', { method: 'DELETE' }); } catch (e) { /* shown by the login form */ }
    state.csrf = null;
    showLogin();
  }

  // ------------------------------------------------------------ pages
  const pages = {
    map: loadMap,
    flows: loadFlows,
    workloads: loadWorkloads,
    identities: loadIdentities,
    policy: loadPolicy,
  };

  function route() {
    const name = (location.hash.replace(/^#\//, '').split('?')[0]) || 'map';
    const page = pages[name] ? name : 'map';
    if (page !== 'flows') stopTail();
    state.page = page;
    for (const p of document.querySelectorAll('.page')) p.hidden = p.id !== 'page-' + page;
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
    pages[page]().catch((e) => { if (e.status !== 401) console.warn('loading ' + page + ': ' + e.message); });
  }

  async function start() {
    let s;
    try {
      s = await api('/api/v1/session', { login: true });
    } catch (e) {
      showLogin(e.status === 401 ? null : e.message);
      return;
    }
    if (!s.authenticated) {
      showLogin(null);
      return;
    }
    state.csrf = s.csrf_token || '';
    $('login').hidden = true;
    $('nav').hidden = false;
    $('logout').hidden = s.via !== 'session';
    $('whoami').textContent = s.via === 'client-certificate' ? s.spiffe_id : '';
    route();
  }

  // ------------------------------------------------------------ map
  const COLOURS = { denied: '#c53030', 'would-deny': '#dd6b20', allowed: '#2f855a', 'no-decision': '#718096', none: '#a0aec0' };
  const SMALL_GRAPH = 150;

  function shortLabel(id) {
    if (id.startsWith('spiffe://')) {
      const rest = id.slice('spiffe://'.length);
      const parts = rest.split('/');
      return parts.length > 3 ? parts[0] + '/…/' + parts.slice(-2).join('/') : rest;
    }
    return id;
  }

  const SEVERITY = { 'denied': 3, 'would-deny': 2, 'allowed': 1, 'no-decision': 0 };
  const worse = (a, b) => ((SEVERITY[b] || -1) > (SEVERITY[a] || -1) ? b : a);

  // The map's edges: one per (source, destination), its ports listed.
  function mapEdges(graph, filters) {
    const merged = new Map();
    for (const e of graph.edges) {
      if (filters.port && e.dst_port !== filters.port) continue;
      if (filters.verdict && (e.verdict || 'no-decision') !== filters.verdict) continue;
      if (!filters.unattributed && (e.src.startsWith('unattributed:') || e.dst.startsWith('unattributed:'))) continue;
      const key = e.src + '\u0000' + e.dst;
      let m = merged.get(key);
      if (!m) {
        m = { id: 'e' + merged.size, src: e.src, dst: e.dst, ports: [], flows: 0, bytes: 0, verdict: null };
        merged.set(key, m);
      }
      m.ports.push(e.protocol + '/' + e.dst_port);
      m.flows += e.flows; m.bytes += e.bytes;
      m.verdict = m.verdict ? worse(m.verdict, e.verdict || 'no-decision') : (e.verdict || 'no-decision');
    }
    let edges = [...merged.values()];
    if (filters.search) {
      const s = filters.search.toLowerCase();
      const hit = (n) => n.toLowerCase().includes(s);
      const near = new Set();
      for (const e of edges) if (hit(e.src) || hit(e.dst)) { near.add(e.src); near.add(e.dst); }
      edges = edges.filter((e) => near.has(e.src) && near.has(e.dst) && (hit(e.src) || hit(e.dst)));
    }
    return edges;
  }

  function dryRunKey(src, dst) { return src + '\u0000' + dst; }

  function drawMap() {
    const g = state.graph;
    if (!g) return;
    const filters = {
      port: Number($('map-port').value) || null,
      verdict: $('map-verdict').value,
      search: $('map-search').value.trim(),
      unattributed: $('map-unattributed').checked,
    };
    const edges = mapEdges(g, filters);
    state.shownEdges = new Map(edges.map((e) => [e.id, e]));
    const nodes = new Set();
    for (const e of edges) { nodes.add(e.src); nodes.add(e.dst); }

    let total = 0, unattributed = 0;
    for (const e of g.edges) {
      total += e.flows;
      if (e.src.startsWith('unattributed:') || e.dst.startsWith('unattributed:')) unattributed += e.flows;
    }
    const share = total ? (100 * unattributed / total).toFixed(1) : '0.0';
    $('map-summary').textContent = nodes.size + (g.by === 'spiffe-id' ? ' identities, ' : ' nodes, ') + edges.length + ' edges, ' + total +
      ' flows since ' + time(g.since_ms) + '; unattributed: ' + unattributed + ' flows (' + share + '%)' +
      (state.dryRun ? '; dry-run: ' + state.dryRun.changedEdges + ' edges change colour' : '');

    const big = nodes.size > SMALL_GRAPH;
    // `#/map?render=elements` draws a big map's edges as graph-library
    // elements too (the baseline the underlay is measured against).
    const lines = big && !location.hash.includes('render=elements');
    // A big map is placed on a grid in name order (so one namespace's
    // identities sit together) without measuring anything: a layered
    // layout of thousands of nodes would take the browser minutes.
    const order = big ? [...nodes].sort() : [];
    const columns = Math.ceil(Math.sqrt(order.length * 1.6));
    const place = new Map(order.map((id, i) => [id, { x: (i % columns) * 60, y: Math.floor(i / columns) * 40 }]));
    const elements = [];
    for (const id of nodes) {
      const kind = id.startsWith('unattributed:') ? 'unattributed' : id.startsWith('external:') ? 'external' : 'identity';
      const node = { group: 'nodes', data: { id: id, label: shortLabel(id), kind: kind } };
      if (big) node.position = place.get(id);
      elements.push(node);
    }
    for (const e of edges) {
      let verdict = e.verdict, changed = false;
      if (state.dryRun) {
        const d = state.dryRun.edges.get(dryRunKey(e.src, e.dst));
        if (d && d.candidate !== d.current) { verdict = d.candidate; changed = true; }
      }
      e.shown = verdict; e.changed = changed;
      // A big map's edges are drawn by the underlay below; a tapped
      // identity's own edges become elements of the graph (clickable,
      // labelled).
      if (!lines) elements.push(edgeElement(e, false));
    }
    const layout = big
      ? { name: 'preset', fit: true, padding: 20 }
      : { name: 'dagre', rankDir: 'LR', nodeSep: 20, rankSep: 120, animate: false };
    if (exposed.cy) exposed.cy.destroy();
    const built = performance.now();
    exposed.cy = cytoscape({
      container: $('map'),
      elements: elements,
      layout: layout,
      textureOnViewport: big,
      autoungrabify: big,
      boxSelectionEnabled: false,
      hideEdgesOnViewport: big,
      hideLabelsOnViewport: big,
      pixelRatio: big ? 1 : 'auto',
      style: [
        // A big map labels only what is picked out (a tapped identity
        // and its neighbours, search hits): thousands of labels cost
        // seconds to measure and are unreadable together anyway.
        { selector: big ? 'node.labelled' : 'node', style: { 'label': 'data(label)', 'font-size': 10, 'text-valign': 'bottom',
          'text-margin-y': 3, 'min-zoomed-font-size': 6 } },
        { selector: 'node', style: { 'background-color': '#2b6cb0', 'width': 18, 'height': 18 } },
        { selector: 'node[kind = "unattributed"]', style: { 'background-color': '#a0aec0', 'shape': 'diamond' } },
        { selector: 'node[kind = "external"]', style: { 'background-color': '#805ad5', 'shape': 'round-rectangle' } },
        big && !lines
          ? { selector: 'edge', style: { 'width': 1, 'curve-style': 'haystack', 'haystack-radius': 0, 'line-color': COLOURS.none } }
          : { selector: 'edge', style: { 'width': 'data(width)', 'target-arrow-shape': 'triangle', 'curve-style': 'bezier',
            'label': 'data(label)', 'font-size': 8, 'text-rotation': 'autorotate', 'color': '#4a5568', 'min-zoomed-font-size': 7,
            'line-color': COLOURS.none, 'target-arrow-color': COLOURS.none } },
        ...Object.entries(COLOURS).map(([v, c]) => ({ selector: 'edge.v-' + v, style: { 'line-color': c, 'target-arrow-color': c } })),
        { selector: 'edge.changed', style: { 'line-style': 'dashed', 'width': 4 } },
        { selector: ':selected', style: { 'overlay-color': '#3182ce', 'overlay-opacity': 0.25 } },
      ],
    });
    exposed.cyMs = performance.now() - built;
    if (big && filters.search) {
      const s = filters.search.toLowerCase();
      exposed.cy.nodes().filter((n) => n.id().toLowerCase().includes(s)).addClass('labelled');
    }
    exposed.cy.on('tap', 'node', (ev) => {
      if (lines) focus(ev.target.id(), edges);
      showNode(ev.target.id());
    });
    if (lines) underlay(edges, place); else removeUnderlay();
    exposed.edgeCount = edges.length;
    exposed.cy.on('tap', 'edge', (ev) => showEdge(state.shownEdges.get(ev.target.id())));
    exposed.ready = true;
    // When the first frame with the new map has been painted.
    exposed.paintedMs = null;
    requestAnimationFrame(() => requestAnimationFrame(() => { exposed.paintedMs = performance.now(); }));
  }

  // The SPIFFE IDs a group member holds (a workload's entries, a node's
  // agent ID).
  const memberIds = (m) => m.spiffe_ids || (m.spiffe_id ? [m.spiffe_id] : []);
  const memberName = (m) => memberIds(m)[0] || m.name || (m.context + '/' + m.node);

  // SPIFFE ID -> the policy groups its holders are in now.
  async function groupsOfIds() {
    // `any` (every workload) would only repeat every edge.
    const groups = (await api('/api/v1/groups')).filter((g) => g.name !== 'any');
    const members = await Promise.all(groups.map((g) =>
      api('/api/v1/groups/' + encodeURIComponent(g.name) + '/members')));
    const of = new Map();
    groups.forEach((g, i) => {
      for (const m of members[i]) for (const id of memberIds(m)) {
        if (!of.has(id)) of.set(id, new Set());
        of.get(id).add('group:' + g.name);
      }
    });
    return of;
  }

  // Edges between SPIFFE IDs re-cut between policy groups: an identity in
  // several groups counts in each; one in none is `(no group)`.
  function byGroup(edges, of, merge) {
    const names = (n) => (n.startsWith('spiffe://') ? [...(of.get(n) || ['group:(no group)'])] : [n]);
    const out = new Map();
    for (const e of edges) {
      for (const s of names(e.src)) for (const d of names(e.dst)) {
        const key = [s, d, e.dst_port, e.protocol].join('\u0000');
        const had = out.get(key);
        out.set(key, had ? merge(had, e) : Object.assign({}, e, { src: s, dst: d }));
      }
    }
    return [...out.values()];
  }

  function mergeGraphEdge(a, b) {
    return Object.assign({}, a, { flows: a.flows + b.flows, bytes: a.bytes + b.bytes,
      verdict: worse(a.verdict || 'no-decision', b.verdict || 'no-decision') });
  }

  function mergeDryRunEdge(a, b) {
    return Object.assign({}, a, { flows: a.flows + b.flows, changed: a.changed + b.changed,
      current: worse(a.current, b.current), candidate: worse(a.candidate, b.candidate) });
  }

  // A map edge as an element of the graph library.
  function edgeElement(e, focused) {
    const data = { id: e.id, source: e.src, target: e.dst, verdict: e.shown,
      label: e.ports.slice(0, 3).join(', ') + (e.ports.length > 3 ? ' …' : ''),
      width: Math.min(1 + Math.log10(1 + e.flows), 6) };
    return { group: 'edges', data: data,
      classes: 'v-' + (e.shown || 'none') + (e.changed ? ' changed' : '') + (focused ? ' focus' : '') };
  }

  // On a big map: the tapped identity's edges (and its neighbours' labels)
  // come forward as elements; the previous ones go back to the underlay.
  function focus(id, edges) {
    const cy = exposed.cy;
    cy.batch(() => {
      cy.edges('.focus').remove();
      cy.nodes('.labelled').removeClass('labelled');
      const mine = edges.filter((e) => e.src === id || e.dst === id);
      cy.add(mine.map((e) => edgeElement(e, true)));
      cy.getElementById(id).closedNeighborhood().nodes().addClass('labelled');
    });
  }

  // A big map's edges, drawn on a canvas under the graph library's: one
  // path per colour, redrawn when the view moves. Thousands of edges as
  // library elements cost seconds to create and to paint the first time;
  // as lines they cost milliseconds.
  function underlay(edges, place) {
    const container = $('map');
    let canvas = container.querySelector('canvas.edges-underlay');
    if (!canvas) {
      canvas = document.createElement('canvas');
      canvas.className = 'edges-underlay';
      container.prepend(canvas);
    }
    const byColour = new Map();
    const changed = [];
    for (const e of edges) {
      const a = place.get(e.src), b = place.get(e.dst);
      if (!a || !b) continue;
      if (e.changed) { changed.push([a, b, COLOURS[e.shown] || COLOURS.none]); continue; }
      const c = COLOURS[e.shown] || COLOURS.none;
      if (!byColour.has(c)) byColour.set(c, []);
      byColour.get(c).push([a, b]);
    }
    let pending = false;
    const draw = () => {
      pending = false;
      const cy = exposed.cy;
      if (!cy || canvas.parentNode !== container) return;
      const w = container.clientWidth, h = container.clientHeight;
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
      const ctx = canvas.getContext('2d');
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const z = cy.zoom(), pan = cy.pan();
      ctx.setTransform(z, 0, 0, z, pan.x, pan.y);
      ctx.lineWidth = 1 / z;
      ctx.globalAlpha = 0.55;
      // Grey first, so that verdicts that matter are drawn on top.
      const order = [...byColour.keys()].sort((x, y) => (x === COLOURS['no-decision'] || x === COLOURS.none ? -1 : 0) - (y === COLOURS['no-decision'] || y === COLOURS.none ? -1 : 0));
      for (const c of order) {
        ctx.strokeStyle = c;
        ctx.beginPath();
        for (const [a, b] of byColour.get(c)) { ctx.moveTo(a.x, a.y); ctx.lineTo(b.x, b.y); }
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
      ctx.lineWidth = 3 / z;
      ctx.setLineDash([8 / z, 6 / z]);
      for (const [a, b, c] of changed) {
        ctx.strokeStyle = c;
        ctx.beginPath(); ctx.moveTo(a.x, a.y); ctx.lineTo(b.x, b.y); ctx.stroke();
      }
      ctx.setLineDash([]);
      exposed.underlayDrawn = edges.length;
    };
    const later = () => { if (!pending) { pending = true; requestAnimationFrame(draw); } };
    exposed.cy.on('viewport resize', later);
    draw();
  }

  function removeUnderlay() {
    const c = $('map').querySelector('canvas.edges-underlay');
    if (c) c.remove();
    exposed.underlayDrawn = 0;
  }

  async function loadMap() {
    exposed.ready = false;
    const started = performance.now();
    exposed.startedMs = started;
    const by = $('map-by').value;
    try {
      const server = by === 'group' ? 'spiffe-id' : by;
      state.graph = await api('/api/v1/graph' + query([['since', $('map-since').value], ['by', server]]));
      if (by === 'group') {
        state.groupsOf = await groupsOfIds();
        state.graph.edges = byGroup(state.graph.edges, state.groupsOf, mergeGraphEdge);
        state.graph.by = 'group';
      }
      exposed.apiMs = performance.now() - started;
    } catch (e) {
      if (e.status !== 401) showError('map-detail', e);
      throw e;
    }
    if (state.dryRun && state.dryRun.by !== by) clearDryRun(false);
    drawMap();
  }

  function flowFilter(name) {
    // The flow filter that selects a map node, when the grouping has one.
    const by = state.graph ? state.graph.by : 'spiffe-id';
    if (name.startsWith('unattributed:') || name.startsWith('external:')) return null;
    if (by === 'spiffe-id' && name.startsWith('spiffe://')) return [name];
    if (by === 'context' && name.startsWith('context:')) return ['context:' + name.slice(8)];
    if (by === 'namespace' && name.includes('/') && !name.endsWith('/(no namespace)')) {
      const i = name.indexOf('/');
      return ['context:' + name.slice(0, i), 'ns:' + name.slice(i + 1)];
    }
    return null;
  }

  function flowsTable(flows) {
    return table([
      ['start', (f) => time(f.flow.start_ms)],
      ['from', (f) => endpointName(f.src)],
      ['to', (f) => endpointName(f.dst)],
      ['port', (f) => f.flow.protocol + '/' + f.flow.dst.split(':').pop()],
      ['bytes', (f) => bytes((f.flow.bytes_sent || 0) + (f.flow.bytes_received || 0))],
      ['verdict', (f) => verdictTag(f.verdict)],
      ['rule', (f) => f.verdict_rule],
    ], flows);
  }

  async function showNode(id) {
    const d = $('map-detail');
    const out = state.graph.edges.filter((e) => e.src === id);
    const inc = state.graph.edges.filter((e) => e.dst === id);
    const zoom = el('button', { type: 'button', text: 'Zoom to its neighbourhood', onclick: () => {
      const n = exposed.cy.getElementById(id);
      exposed.cy.animate({ fit: { eles: n.closedNeighborhood(), padding: 60 } }, { duration: 300 });
    } });
    const parts = [el('h3', { text: id }),
      el('p', { text: out.length + ' outgoing and ' + inc.length + ' incoming edges' }), zoom];
    d.replaceChildren(...parts);
    const f = flowFilter(id);
    const since = $('map-since').value;
    const extra = [];
    try {
      if (state.graph.by === 'spiffe-id' && id.startsWith('spiffe://')) {
        const [entries, workloads, groups] = await Promise.all([
          api('/api/v1/entries' + query([['spiffe_id', id]])),
          api('/api/v1/workloads' + query([['state', 'current']])),
          api('/api/v1/groups'),
        ]);
        const mine = workloads.filter((w) => w.record && (w.record.spiffe_ids || []).includes(id));
        extra.push(el('h4', { text: 'Workloads (' + mine.length + ')' }), table([
          ['name', (w) => w.record.name || w.record.container_id.slice(0, 12)],
          ['node', (w) => w.agent_id.split('/').pop()], ['image', (w) => w.record.image], ['state', (w) => w.record.state],
        ], mine));
        extra.push(el('h4', { text: 'Entries (' + entries.length + ')' }), table([
          ['id', (e) => e.id], ['selectors', (e) => (e.selectors || []).join(' ')],
        ], entries));
        const member = [];
        for (const g of groups) {
          const m = await api('/api/v1/groups/' + encodeURIComponent(g.name) + '/members');
          if (m.some((x) => memberIds(x).includes(id))) member.push(g.name);
        }
        extra.push(el('h4', { text: 'Groups' }), el('p', { text: member.length ? member.join(', ') : 'none' }));
      }
      if (id.startsWith('group:') && id !== 'group:(no group)') {
        const m = await api('/api/v1/groups/' + encodeURIComponent(id.slice(6)) + '/members');
        extra.push(el('h4', { text: 'Members (' + m.length + ')' }), table([
          ['SPIFFE IDs', (x) => memberIds(x).join(' ')], ['name', (x) => x.name || (x.context + '/' + x.node)],
        ], m));
      }
      if (f) {
        const [from, to] = await Promise.all([
          api('/api/v1/flows' + query([['since', since], ['limit', 20], ...f.map((x) => ['from', x])])),
          api('/api/v1/flows' + query([['since', since], ['limit', 20], ...f.map((x) => ['to', x])])),
        ]);
        const recent = from.concat(to).sort((a, b) => b.flow.start_ms - a.flow.start_ms).slice(0, 20);
        extra.push(el('h4', { text: 'Recent flows' }), flowsTable(recent));
      }
    } catch (e) {
      if (e.status !== 401) extra.push(el('p', { class: 'error', text: e.message }));
    }
    d.replaceChildren(...parts, ...extra);
  }

  async function showEdge(e) {
    const data = { source: e.src, target: e.dst, ports: e.ports, flows: e.flows, bytes: e.bytes, verdict: e.shown, stored: e.verdict };
    const d = $('map-detail');
    const head = [el('h3', { text: data.source + ' → ' + data.target }),
      el('p', {}, data.ports.join(', ') + ' · ' + data.flows + ' flows · ' + bytes(data.bytes) + ' · ', verdictTag(data.verdict))];
    if (e.changed) head.push(el('p', { class: 'changed-note', text: 'The dry-run candidate changes this edge from ' + data.stored + ' to ' + data.verdict + '.' }));
    d.replaceChildren(...head, el('p', { class: 'hint', text: 'Loading flows…' }));
    const f = flowFilter(data.source), t = flowFilter(data.target);
    const params = [['since', $('map-since').value], ['limit', 200]];
    if (f) for (const x of f) params.push(['from', x]);
    if (t) for (const x of t) params.push(['to', x]);
    try {
      let flows = await api('/api/v1/flows' + query(params));
      // The edge's ports only (a node's filter covers all its traffic).
      flows = flows.filter((x) => data.ports.includes(x.flow.protocol + '/' + x.flow.dst.split(':').pop()));
      d.replaceChildren(...head, el('h4', { text: 'Flows (' + flows.length + ')' }), flowsTable(flows));
    } catch (e) {
      if (e.status !== 401) d.replaceChildren(...head, el('p', { class: 'error', text: e.message }));
    }
  }

  function clearDryRun(redraw) {
    state.dryRun = null;
    $('map-clear-dryrun').hidden = true;
    if (redraw !== false) drawMap();
  }

  // ------------------------------------------------------------ flows
  function flowParams(extra) {
    const v = (id) => $(id).value.trim();
    const params = [['since', v('flows-since') || '1h'], ['until', v('flows-until')], ['port', v('flows-port')],
      ['protocol', v('flows-protocol')], ['verdict', v('flows-verdict')], ['status', v('flows-status')]];
    for (const f of v('flows-from').split(/\s+/)) params.push(['from', f]);
    for (const f of v('flows-to').split(/\s+/)) params.push(['to', f]);
    return params.concat(extra);
  }

  let flowRows = [];
  async function loadFlows() {
    try {
      flowRows = await api('/api/v1/flows' + query(flowParams([['limit', $('flows-limit').value || 200]])));
      state.lastFlowId = flowRows.reduce((m, f) => Math.max(m, f.id), 0);
      $('flows-summary').textContent = flowRows.length + ' flows, newest first';
      put('flows-table', flowsTable(flowRows));
    } catch (e) {
      if (e.status !== 401) showError('flows-table', e);
    }
    if ($('flows-tail').checked) startTail(); else stopTail();
  }

  function startTail() {
    stopTail();
    state.tailTimer = setInterval(async () => {
      try {
        const fresh = await api('/api/v1/flows' + query(flowParams([['after_id', state.lastFlowId], ['limit', 1000]])));
        if (!fresh.length) return;
        state.lastFlowId = fresh.reduce((m, f) => Math.max(m, f.id), state.lastFlowId);
        const limit = Number($('flows-limit').value) || 200;
        flowRows = fresh.reverse().concat(flowRows).slice(0, limit);
        $('flows-summary').textContent = flowRows.length + ' flows, newest first (live)';
        put('flows-table', flowsTable(flowRows));
      } catch (e) {
        stopTail();
      }
    }, 2000);
  }

  function stopTail() {
    if (state.tailTimer) clearInterval(state.tailTimer);
    state.tailTimer = null;
  }

  // ------------------------------------------------------------ workloads
  async function loadWorkloads() {
    const v = (id) => $(id).value.trim();
    try {
      const [agents, workloads] = await Promise.all([
        api('/api/v1/agents'),
        api('/api/v1/workloads' + query([['context', v('wl-context')], ['namespace', v('wl-namespace')],
          ['label', v('wl-label')], ['state', $('wl-state').value]])),
      ]);
      put('agents-table', table([
        ['agent', (a) => a.spiffe_id], ['context', (a) => a.context_name],
        ['connected', (a) => (a.connected ? 'yes' : 'no')], ['last seen', (a) => secs(a.last_seen)],
        ['runtime', (a) => (a.runtime ? a.runtime.runtime + ' ' + a.runtime.version : '')],
        ['status', (a) => (a.banned ? el('span', { class: 'bad', text: 'banned' })
          : a.runtime && a.runtime.degraded ? el('span', { class: 'bad', text: 'degraded: ' + a.runtime.reason }) : 'ok')],
      ], agents));
      put('workloads-table', table([
        ['context', (w) => w.context_name], ['node', (w) => w.agent_id.split('/').pop()],
        ['name', (w) => w.record.name], ['image', (w) => w.record.image],
        ['namespace', (w) => w.record.namespace], ['state', (w) => w.record.state],
        ['SPIFFE IDs', (w) => (w.record.spiffe_ids || []).join(' ')],
        ['labels', (w) => Object.entries(w.record.labels || {}).map(([k, x]) => k + '=' + x).join(' ')],
        ['first seen', (w) => time(w.first_seen_ms)],
      ], workloads));
    } catch (e) {
      if (e.status !== 401) showError('workloads-table', e);
    }
  }

  // ------------------------------------------------------------ identities
  async function loadIdentities() {
    try {
      const [entries, authorities, federations, agents] = await Promise.all([
        api('/api/v1/entries'), api('/api/v1/authorities'), api('/api/v1/federations'), api('/api/v1/agents')]);
      put('identity-agents-table', table([
        ['agent', (a) => a.spiffe_id], ['serial', (a) => a.serial], ['SVID expires', (a) => secs(a.expires_at)],
        ['attested', (a) => secs(a.attested_at)], ['connected', (a) => (a.connected ? 'yes' : 'no')],
        ['banned', (a) => (a.banned ? el('span', { class: 'bad', text: 'banned' }) : '')],
      ], agents));
      put('entries-table', table([
        ['SPIFFE ID', (e) => e.spiffe_id], ['parent', (e) => e.parent_id],
        ['selectors', (e) => (e.selectors || []).join(' ')], ['admin', (e) => (e.admin ? 'yes' : '')], ['id', (e) => e.id],
      ], entries));
      put('authorities-table', table([
        ['kind', (a) => a.kind], ['id', (a) => a.id], ['state', (a) => el('span', { class: 'state ' + a.state, text: a.state })],
        ['algorithm', (a) => a.alg], ['created', (a) => secs(a.created_at)], ['not after', (a) => secs(a.not_after)],
      ], authorities));
      put('federations-table', table([
        ['trust domain', (f) => f.trust_domain], ['endpoint', (f) => f.bundle_endpoint_url], ['profile', (f) => f.profile],
        ['last refresh', (f) => secs(f.last_refresh)], ['next refresh', (f) => secs(f.next_refresh)],
        ['status', (f) => (f.last_error ? el('span', { class: 'bad', text: f.last_error }) : 'ok')],
      ], federations));
    } catch (e) {
      if (e.status !== 401) showError('entries-table', e);
    }
  }

  // ------------------------------------------------------------ policy
  async function loadPolicy() {
    try {
      const [policy, groups, audit, enforcement, flows, rules] = await Promise.all([
        api('/api/v1/policy'), api('/api/v1/groups'), api('/api/v1/policy/audit' + query([['limit', 200]])),
        api('/api/v1/policy/enforcement'), api('/api/v1/flows' + query([['since', '24h'], ['limit', 10000]])),
        api('/api/v1/policy/rules')]);
      $('policy-summary').textContent = policy.revision
        ? 'Revision ' + policy.revision + ' in force since ' + time(policy.applied_at_ms) + '; enforcement ' + enforcement.enforcement
        : 'No policy applied yet; enforcement ' + enforcement.enforcement;
      if (!$('candidate').value) $('candidate').value = policy.document || '';
      const members = await Promise.all(groups.map((g) =>
        api('/api/v1/groups/' + encodeURIComponent(g.name) + '/members').catch(() => [])));
      put('groups-table', table([
        ['group', (g) => g.name], ['members', (g, i) => g.members],
        ['who', (g) => (members[groups.indexOf(g)] || []).slice(0, 5).map(memberName).join(', ')],
      ], groups));
      // Every rule of the revision in force, in document order, with the
      // verdicts it gave the last day's flows (the default's last).
      const byRule = new Map();
      const row = (name, r) => ({ rule: name, from: r ? r.from.join(', ') : '', to: r ? r.to.join(', ') : '',
        ports: r ? (r.protocol + ' ' + (r.ports.length ? r.ports.join(',') : 'any')) : '', action: r ? r.action : rules.default,
        mode: r ? r.mode : '', allowed: 0, denied: 0, 'would-deny': 0 });
      for (const r of rules.rules) byRule.set(r.name, row(r.name, r));
      byRule.set('(default)', row('(default)', null));
      for (const f of flows) {
        if (!f.verdict) continue;
        const k = f.verdict_rule || '(default)';
        if (!byRule.has(k)) byRule.set(k, row(k, null));
        const c = byRule.get(k);
        if (c[f.verdict] !== undefined) c[f.verdict] += 1;
      }
      put('rules-table', table([
        ['rule', (r) => r.rule], ['from', (r) => r.from], ['to', (r) => r.to], ['ports', (r) => r.ports],
        ['action', (r) => r.action], ['mode', (r) => r.mode], ['allowed', (r) => r.allowed],
        ['would-deny', (r) => r['would-deny']], ['denied', (r) => r.denied],
      ], [...byRule.values()]));
      put('audit-table', flowsTable(audit));
    } catch (e) {
      if (e.status !== 401) showError('audit-table', e);
    }
  }

  async function dryRun() {
    const by = $('map-by').value;
    $('dry-run-result').textContent = 'Running…';
    try {
      const r = await api('/api/v1/policy/dry-run', { method: 'POST', body: {
        document: $('candidate').value, since: $('map-since').value, by: by === 'group' ? 'spiffe-id' : by } });
      if (by === 'group') r.edges = byGroup(r.edges || [], state.groupsOf || await groupsOfIds(), mergeDryRunEdge);
      const edges = new Map();
      // Map edges merge ports: an edge changes colour when its worst
      // verdict does.
      const merged = new Map();
      for (const e of r.edges || []) {
        const k = dryRunKey(e.src, e.dst);
        const m = merged.get(k) || { current: 'no-decision', candidate: 'no-decision', changed: 0 };
        m.current = worse(m.current, e.current); m.candidate = worse(m.candidate, e.candidate); m.changed += e.changed;
        merged.set(k, m);
      }
      let changedEdges = 0;
      for (const [k, m] of merged) { edges.set(k, m); if (m.current !== m.candidate) changedEdges++; }
      state.dryRun = { by: by, edges: edges, changedEdges: changedEdges, answer: r };
      $('dry-run-result').textContent = r.changed + ' of ' + r.flows_considered + ' flows change verdict; ' +
        changedEdges + ' map edges change colour.';
      $('map-clear-dryrun').hidden = false;
      location.hash = '#/map';
    } catch (e) {
      $('dry-run-result').textContent = e.message;
      $('dry-run-result').classList.add('error');
    }
  }

  async function apply() {
    if (!window.confirm('Apply this document as the policy in force?')) return;
    try {
      const r = await api('/api/v1/policy', { method: 'POST', body: { document: $('candidate').value, file: 'console.yaml' } });
      $('dry-run-result').textContent = 'Applied as revision ' + r.revision + '.';
      clearDryRun(false);
      loadPolicy();
    } catch (e) {
      $('dry-run-result').textContent = e.message;
    }
  }

  // ------------------------------------------------------------ wiring
  function wire() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('map-controls').addEventListener('submit', (ev) => { ev.preventDefault(); loadMap(); });
    for (const id of ['map-since', 'map-by']) $(id).addEventListener('change', () => loadMap());
    for (const id of ['map-verdict', 'map-unattributed']) $(id).addEventListener('change', drawMap);
    for (const id of ['map-search', 'map-port']) $(id).addEventListener('input', drawMap);
    $('map-fit').addEventListener('click', () => exposed.cy && exposed.cy.fit());
    $('map-clear-dryrun').addEventListener('click', () => clearDryRun());
    $('flow-controls').addEventListener('submit', (ev) => { ev.preventDefault(); loadFlows(); });
    $('flows-tail').addEventListener('change', () => ($('flows-tail').checked ? startTail() : stopTail()));
    $('workload-controls').addEventListener('submit', (ev) => { ev.preventDefault(); loadWorkloads(); });
    $('dry-run').addEventListener('click', dryRun);
    $('apply').addEventListener('click', apply);
    window.addEventListener('hashchange', () => { if (state.csrf !== null) route(); });
  }

  window.addEventListener('DOMContentLoaded', () => {
    wire();
    start();
  });
})();
