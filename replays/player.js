// tickline's replay player: plays one recorded match from the data embedded in this page.
//
// Owns the page's behaviour: unpacking the data (gzip'd JSON, base64, in #tickline-data),
// rebuilding each sampled view from its keyframe and deltas (shared/delta.py's format),
// drawing the tables that declare draw hints on a canvas map and the rest as text, and the
// controls. It loads nothing from anywhere: the page is one file. Plain JS, no build step.
// window.tickline exposes the page's state to tests and to anyone scripting the page.
"use strict";

(() => {
  const PALETTE = [
    "#ff5a5f", "#3ea6ff", "#ffc107", "#c77dff", "#ff8c42",
    "#2ee6d6", "#ff6fb5", "#a0e426", "#f4f1de", "#7b8cff",
  ];
  const SPEEDS = [0.25, 0.5, 1, 2, 4, 8, 16];
  const MEMO_LIMIT = 256; // decoded views kept per stream: a few seconds either side of the playhead
  const MAX_FRAME_S = 0.25; // a hidden tab's long pause must not jump the match ahead

  const $ = (id) => document.getElementById(id);
  const counters = { draws: 0, hookCalls: 0, hookErrors: 0 };
  let data = null;
  let schema = null;
  let ticks = [];
  let t = 0; // the playhead, in ticks (fractional while playing)
  let playing = false;
  let speed = 1;
  let follow = "full"; // the stream drawn: "full" (the whole map) or a player id
  let lastFrameAt = null;
  let shownPanels = "";
  let hook = null;
  const hookErrorsSeen = new Set();
  const memos = new Map();
  const geometry = { s: 1, ox: 0, oy: 0, dpr: 1, width: 0, height: 0 };

  function colourOf(pid) {
    const n = Number(pid);
    if (!Number.isFinite(n) || n <= 0) return "#9aa0ad";
    return PALETTE[(Math.trunc(n) - 1) % PALETTE.length];
  }

  // ------------------------------------------------------------------ data

  async function unpack() {
    const text = $("tickline-data").textContent.trim();
    if (typeof DecompressionStream !== "function") {
      throw new Error("this browser cannot decompress the page's data (no DecompressionStream); use a current Chrome, Firefox or Safari");
    }
    const raw = atob(text);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  // shared/delta.py's apply: a new view; the base is untouched and shares what did not change.
  function applyDelta(base, delta) {
    if (delta === null || typeof delta !== "object") throw new Error("a delta is not an object");
    const out = Object.assign({}, base);
    if (delta.u) {
      for (const key of Object.keys(delta.u)) {
        const old = out[key];
        if (old === null || typeof old !== "object" || Array.isArray(old)) {
          throw new Error(`a delta updates ${key}, which its base lacks`);
        }
        out[key] = applyDelta(old, delta.u[key]);
      }
    }
    if (delta.n) for (const key of Object.keys(delta.n)) out[key] = out[key] + delta.n[key];
    if (delta.s) for (const key of Object.keys(delta.s)) out[key] = delta.s[key];
    if (delta.r) for (const key of delta.r) delete out[key];
    return out;
  }

  // The view of ``stream`` at sample ``i``. A frame is a whole view (every keyframe_every-th
  // sample), a delta from the stream's previous sample, or 0: "the same as the whole map's".
  function viewAt(stream, i) {
    let memo = memos.get(stream);
    if (!memo) memos.set(stream, (memo = new Map()));
    if (memo.has(i)) return memo.get(i);
    const frames = data.streams[stream];
    if (stream !== "full") {
      // A player's frame is its difference from the whole map's view at the same sample.
      const frame = frames[i];
      const view = frame === 0 ? viewAt("full", i) : applyDelta(viewAt("full", i), frame);
      memo.set(i, view);
      if (memo.size > MEMO_LIMIT) memo.delete(memo.keys().next().value);
      return view;
    }
    const every = data.keyframe_every;
    let j = i - (i % every);
    let view = null;
    if (i % every !== 0 && memo.has(i - 1)) {
      j = i;
      view = memo.get(i - 1);
    }
    for (; j <= i; j++) {
      const frame = frames[j];
      if (frame === 0) view = viewAt("full", j);
      else if (j % every === 0) view = frame;
      else view = applyDelta(view, frame);
      memo.set(j, view);
      if (memo.size > MEMO_LIMIT) memo.delete(memo.keys().next().value);
    }
    return view;
  }

  // The last sample at or before tick ``at``.
  function sampleAt(at) {
    let lo = 0;
    let hi = ticks.length - 1;
    if (at <= ticks[0]) return 0;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (ticks[mid] <= at) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  // ------------------------------------------------------------------ the scene at a tick

  // Tables with draw hints, the players' table last (drawn on top of shots and pickups).
  function drawnTables() {
    const names = Object.keys(schema.tables).filter((name) => schema.tables[name].draw);
    names.sort((a, b) => (a === schema.players) - (b === schema.players));
    return names;
  }

  function scaleOf(table, field) {
    const spec = table.fields[field];
    return spec && typeof spec.scale === "number" ? spec.scale : 1;
  }

  // Every drawn entity at the playhead, in world units: positions interpolated between the
  // two samples around it (the fields the table declares in ``interpolate``), and entities
  // that move in a straight line placed from where and when they were.
  function scene(at) {
    const i = sampleAt(at);
    const j = Math.min(i + 1, ticks.length - 1);
    const alpha = j > i ? Math.min(1, Math.max(0, (at - ticks[i]) / (ticks[j] - ticks[i]))) : 0;
    const now = viewAt(follow, i);
    const next = alpha > 0 ? viewAt(follow, j) : now;
    const entities = [];
    for (const name of drawnTables()) {
      const table = schema.tables[name];
      const draw = table.draw;
      const lerped = new Set(table.interpolate);
      const rows = now[name] || {};
      const after = next[name] || {};
      for (const id of Object.keys(rows)) {
        const e = rows[id];
        const e2 = after[id];
        const value = (field) => {
          let v = e[field];
          const w = e2 ? e2[field] : undefined;
          if (alpha > 0 && lerped.has(field) && typeof v === "number" && typeof w === "number") v += (w - v) * alpha;
          return v * scaleOf(table, field);
        };
        let x = value(draw.x);
        let y = value(draw.y);
        if (draw.vx && draw.vy && draw.since) {
          const dt = at - e[draw.since];
          if (dt < 0) continue; // not fired yet at this instant
          x += value(draw.vx) * dt;
          y += value(draw.vy) * dt;
        }
        if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
        const owner = draw.colour_by ? e[draw.colour_by] : Number(id);
        entities.push({
          table: name,
          id,
          x,
          y,
          size: draw.size,
          shape: draw.shape,
          colour: draw.colour === "player" ? colourOf(owner) : draw.colour,
          faded: Boolean(draw.hidden_when) && !e[draw.hidden_when],
          label: draw.label ? String(e[draw.label] ?? "") : "",
          bar: draw.bar && typeof e[draw.bar] === "number" ? Math.max(0, Math.min(1, e[draw.bar] / draw.bar_max)) : null,
          followed: name === schema.players && id === follow,
        });
      }
    }
    return { i, view: now, entities };
  }

  // ------------------------------------------------------------------ drawing

  function resize() {
    const canvas = $("canvas");
    const box = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(box.width * dpr));
    const height = Math.max(1, Math.round(box.height * dpr));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    geometry.dpr = dpr;
    geometry.width = width;
    geometry.height = height;
    if (schema.world) {
      const [ww, wh] = schema.world;
      const margin = 12 * dpr;
      geometry.s = Math.max(1e-6, Math.min((width - 2 * margin) / ww, (height - 2 * margin) / wh));
      geometry.ox = (width - ww * geometry.s) / 2;
      geometry.oy = (height - wh * geometry.s) / 2;
    }
  }

  function toCanvas(x, y) {
    return { x: geometry.ox + x * geometry.s, y: geometry.oy + y * geometry.s };
  }

  function drawMap(ctx, entities) {
    const { s, dpr } = geometry;
    const [ww, wh] = schema.world;
    const corner = toCanvas(0, 0);
    ctx.fillStyle = "#1b1f2a";
    ctx.fillRect(corner.x, corner.y, ww * s, wh * s);
    ctx.strokeStyle = "#252b39";
    ctx.lineWidth = 1;
    const grid = 10 ** Math.max(0, Math.floor(Math.log10(Math.max(ww, wh))) - 1); // ~10 lines a side
    ctx.beginPath();
    for (let gx = grid; gx < ww; gx += grid) {
      ctx.moveTo(corner.x + gx * s, corner.y);
      ctx.lineTo(corner.x + gx * s, corner.y + wh * s);
    }
    for (let gy = grid; gy < wh; gy += grid) {
      ctx.moveTo(corner.x, corner.y + gy * s);
      ctx.lineTo(corner.x + ww * s, corner.y + gy * s);
    }
    ctx.stroke();
    ctx.strokeStyle = "#3a4152";
    ctx.strokeRect(corner.x, corner.y, ww * s, wh * s);

    ctx.font = `${12 * dpr}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    for (const e of entities) {
      const p = toCanvas(e.x, e.y);
      const r = Math.max(2 * dpr, e.size * s);
      ctx.globalAlpha = e.faded ? 0.3 : 1;
      ctx.fillStyle = e.colour;
      ctx.strokeStyle = e.colour;
      if (e.shape === "square") {
        ctx.fillRect(p.x - r, p.y - r, 2 * r, 2 * r);
      } else {
        ctx.beginPath();
        ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
        if (e.shape === "ring") {
          ctx.lineWidth = Math.max(1, r / 4);
          ctx.stroke();
        } else {
          ctx.fill();
        }
      }
      if (e.followed) {
        ctx.strokeStyle = "#ffffff";
        ctx.lineWidth = 2 * dpr;
        ctx.beginPath();
        ctx.arc(p.x, p.y, r + 3 * dpr, 0, 2 * Math.PI);
        ctx.stroke();
      }
      if (e.bar !== null) {
        const w = Math.max(2 * r, 16 * dpr);
        const y = p.y - r - 7 * dpr;
        ctx.fillStyle = "#000000";
        ctx.fillRect(p.x - w / 2, y, w, 4 * dpr);
        ctx.fillStyle = e.bar > 0.5 ? "#5ad17a" : e.bar > 0.25 ? "#ffc107" : "#ff5a5f";
        ctx.fillRect(p.x - w / 2, y, w * e.bar, 4 * dpr);
      }
      if (e.label) {
        ctx.fillStyle = "#e6e6e6";
        ctx.fillText(e.label, p.x, p.y + r + 14 * dpr);
      }
    }
    ctx.globalAlpha = 1;
    if (follow !== "full") {
      // Fog: the map holds only what this player was sent.
      ctx.textAlign = "left";
      ctx.fillStyle = "#e6e6e6";
      ctx.fillText(`${data.players[follow] ?? follow}'s view: only what the server sent them`, corner.x + 8 * dpr, corner.y + 18 * dpr);
    }
  }

  function render() {
    const canvas = $("canvas");
    const ctx = canvas.getContext("2d");
    const frame = scene(t);
    if (!$("stage").hidden) {
      resize();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#0f1117";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      if (schema.world) drawMap(ctx, frame.entities);
      if (hook) runHook(ctx, frame.view);
    }
    counters.draws++;
    showTime();
    showPanels(frame.i);
  }

  function runHook(ctx, view) {
    counters.hookCalls++;
    ctx.save();
    try {
      hook(ctx, view, {
        tick: t,
        sampleTick: ticks[sampleAt(t)],
        width: geometry.width,
        height: geometry.height,
        dpr: geometry.dpr,
        world: schema.world,
        toCanvas,
        colourOf,
        players: data.players,
        follow: follow === "full" ? 0 : Number(follow),
      });
    } catch (err) {
      counters.hookErrors++;
      const message = `the game's draw hook failed: ${err && err.message ? err.message : err}`;
      if (!hookErrorsSeen.has(message)) {
        hookErrorsSeen.add(message);
        console.error(message);
        $("status").textContent = message;
      }
    } finally {
      ctx.restore();
    }
  }

  // ------------------------------------------------------------------ text: clock, scoreboard, panels

  function showTime() {
    const whole = Math.floor(t + 1e-9);
    const seconds = (whole / data.tick_rate).toFixed(2);
    $("clock").textContent = `tick ${whole} / ${data.stop}  ·  ${seconds} s`;
    const scrub = $("scrub");
    if (document.activeElement !== scrub || playing) scrub.value = String(whole);
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function playerCell(row, pid) {
    const td = cell(row, data.players[pid] ?? `#${pid}`);
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = colourOf(pid);
    td.prepend(dot);
    return td;
  }

  function shown(value) {
    if (Array.isArray(value)) return value.length ? value.join(" ") : "–";
    if (value === true) return "yes";
    if (value === false) return "no";
    if (value !== null && typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function showScoreboard(full) {
    const board = $("scoreboard");
    board.replaceChildren();
    const rows = full[schema.players];
    if (!rows || typeof rows !== "object") {
      board.hidden = true;
      return;
    }
    board.hidden = false;
    const draw = (schema.tables[schema.players] || {}).draw;
    const ids = Object.keys(rows).sort(
      (a, b) => (rows[b].score ?? 0) - (rows[a].score ?? 0) || Number(a) - Number(b),
    );
    for (const id of ids) {
      const tr = document.createElement("tr");
      const name = playerCell(tr, id);
      if (typeof rows[id].name === "string") name.lastChild.textContent = rows[id].name;
      cell(tr, rows[id].score ?? "", "num");
      if (draw && draw.hidden_when && !rows[id][draw.hidden_when]) tr.className = "faded";
      board.appendChild(tr);
    }
  }

  // Tables without draw hints, and the view's top-level values, as text.
  function showPanels(i) {
    const key = `${follow}:${i}`;
    if (key === shownPanels) return;
    shownPanels = key;
    const full = viewAt("full", i);
    showScoreboard(full);
    const view = viewAt(follow, i);
    const panels = $("panels");
    panels.replaceChildren();
    const values = [];
    for (const name of Object.keys(view)) {
      const rows = view[name];
      const table = schema.tables[name];
      const isTable = table || (rows !== null && typeof rows === "object" && !Array.isArray(rows));
      if (!isTable) {
        values.push(name);
        continue;
      }
      if (table && table.draw) continue;
      const section = document.createElement("section");
      const h = document.createElement("h3");
      h.textContent = name;
      if (table && table.doc) h.title = table.doc;
      section.appendChild(h);
      const ids = Object.keys(rows || {});
      const fields = table ? Object.keys(table.fields) : [...new Set(ids.flatMap((id) => Object.keys(rows[id] || {})))];
      const byPlayer = name === schema.players || (table && table.key === "player id");
      const grid = document.createElement("table");
      const head = document.createElement("tr");
      for (const label of [byPlayer ? "player" : "id", ...fields]) {
        const th = document.createElement("th");
        th.textContent = label;
        head.appendChild(th);
      }
      grid.appendChild(head);
      for (const id of ids) {
        const tr = document.createElement("tr");
        if (byPlayer) playerCell(tr, id);
        else cell(tr, id);
        for (const field of fields) cell(tr, shown(rows[id][field] ?? ""), typeof rows[id][field] === "number" ? "num" : "");
        grid.appendChild(tr);
      }
      if (!ids.length) {
        const tr = document.createElement("tr");
        cell(tr, "(none)", "muted");
        grid.appendChild(tr);
      }
      section.appendChild(grid);
      panels.appendChild(section);
    }
    if (values.length) {
      const section = document.createElement("section");
      const h = document.createElement("h3");
      h.textContent = follow === "full" ? "match" : `${data.players[follow] ?? follow} sees`;
      section.appendChild(h);
      const list = document.createElement("dl");
      for (const name of values) {
        const dt = document.createElement("dt");
        dt.textContent = name;
        const spec = schema.values[name];
        if (spec && spec.doc) dt.title = spec.doc;
        const dd = document.createElement("dd");
        dd.textContent = shown(view[name]);
        list.append(dt, dd);
      }
      section.appendChild(list);
      panels.appendChild(section);
    }
  }

  // ------------------------------------------------------------------ controls

  function clamp(at) {
    return Math.min(data.stop, Math.max(data.start, at));
  }

  function seek(at) {
    const n = Number(at);
    if (!Number.isFinite(n)) throw new Error(`seek needs a tick, not ${at}`);
    t = clamp(n);
    render();
    return Math.floor(t + 1e-9);
  }

  function frame(now) {
    if (!playing) return;
    const dt = lastFrameAt === null ? 0 : Math.min(MAX_FRAME_S, (now - lastFrameAt) / 1000);
    lastFrameAt = now;
    t = clamp(t + dt * data.tick_rate * speed);
    if (t >= data.stop) pause();
    render();
    if (playing) requestAnimationFrame(frame);
  }

  function play() {
    if (playing) return;
    if (t >= data.stop) t = data.start;
    playing = true;
    lastFrameAt = null;
    $("play").textContent = "❚❚";
    requestAnimationFrame(frame);
  }

  function pause() {
    playing = false;
    $("play").textContent = "▶";
  }

  function step(by) {
    pause();
    const whole = Math.floor(t + 1e-9);
    seek(by > 0 ? whole + by : Math.ceil(t - 1e-9) + by);
  }

  function setSpeed(value) {
    const n = Number(value);
    if (!SPEEDS.includes(n)) throw new Error(`speed must be one of ${SPEEDS.join(", ")}`);
    speed = n;
    $("speed").value = String(n);
  }

  function setFollow(pid) {
    const stream = pid === 0 || pid === "0" || pid === "full" ? "full" : String(pid);
    if (!(stream in data.streams)) throw new Error(`no player ${pid} in this match`);
    follow = stream;
    $("follow").value = stream === "full" ? "0" : stream;
    shownPanels = "";
    render();
  }

  function markTitle(tick, event) {
    const name = (pid) => data.players[pid] ?? `#${pid}`;
    const parts = [event.k];
    if (event.k === "kill" && event.p !== undefined && event.by !== undefined) {
      parts.splice(0, 1, `${name(event.by)} killed ${name(event.p)}`);
    } else if (event.k === "refused" && event.why !== undefined) {
      // What the server refused of a player (over its input rate, or what got it kicked).
      parts.splice(0, 1, `server refused ${name(event.p)}: ${event.why} (${event.n}x)`);
    } else {
      for (const [k, v] of Object.entries(event)) {
        if (k !== "k") parts.push(`${k}=${["p", "by", "winner"].includes(k) ? name(v) : JSON.stringify(v)}`);
      }
    }
    return `tick ${tick}: ${parts.join(" ")}`;
  }

  function buildControls() {
    const scrub = $("scrub");
    scrub.min = String(data.start);
    scrub.max = String(data.stop);
    scrub.addEventListener("input", () => {
      pause();
      seek(Number(scrub.value));
    });
    const marks = $("marks");
    const span = Math.max(1, data.stop - data.start);
    const byTick = new Map(); // one mark per tick: a mutual kill is one moment
    for (const [tick, event] of data.marks) {
      if (!byTick.has(tick)) byTick.set(tick, []);
      byTick.get(tick).push(event);
    }
    for (const [tick, events] of byTick) {
      const mark = document.createElement("button");
      mark.className = "mark";
      mark.type = "button";
      mark.dataset.tick = String(tick);
      mark.title = events.map((event) => markTitle(tick, event)).join("\n");
      mark.setAttribute("aria-label", mark.title);
      mark.style.left = `${((tick - data.start) / span) * 100}%`;
      const who = events[0].by ?? events[0].winner ?? events[0].p;
      mark.style.background = who ? colourOf(who) : "#9aa0ad";
      mark.addEventListener("click", () => {
        pause();
        seek(tick);
      });
      marks.appendChild(mark);
    }
    $("play").addEventListener("click", () => (playing ? pause() : play()));
    $("back").addEventListener("click", () => step(-1));
    $("forward").addEventListener("click", () => step(1));
    const speeds = $("speed");
    for (const s of SPEEDS) {
      const option = document.createElement("option");
      option.value = String(s);
      option.textContent = `${s}x`;
      speeds.appendChild(option);
    }
    speeds.value = String(speed);
    speeds.addEventListener("change", () => setSpeed(speeds.value));
    const select = $("follow");
    for (const pid of Object.keys(data.players)) {
      if (!(pid in data.streams)) continue;
      const option = document.createElement("option");
      option.value = pid;
      option.textContent = `${data.players[pid]} (${pid})`;
      select.appendChild(option);
    }
    select.addEventListener("change", () => setFollow(select.value));
    document.addEventListener("keydown", (event) => {
      if (event.target instanceof HTMLSelectElement || event.target instanceof HTMLInputElement) return;
      if (event.key === " ") {
        event.preventDefault();
        playing ? pause() : play();
      } else if (event.key === "ArrowLeft") {
        step(-1);
      } else if (event.key === "ArrowRight") {
        step(1);
      }
    });
    window.addEventListener("resize", () => render());
  }

  function compileHook(source) {
    if (!source) return null;
    // The game's own drawing: the source of a function (ctx, view, info) => void.
    const made = new Function(`"use strict"; return (${source});`)();
    if (typeof made !== "function") throw new Error("the game's draw hook is not a function");
    return made;
  }

  async function start() {
    data = await unpack();
    schema = data.schema;
    ticks = data.ticks;
    if (!ticks.length) throw new Error("this replay holds no ticks");
    t = data.start;
    try {
      hook = compileHook(data.draw_hook);
    } catch (err) {
      console.error(`the game's draw hook does not compile: ${err.message}`);
      $("status").textContent = "the game's draw hook does not compile";
    }
    const match = data.match_id ? ` · match ${data.match_id.slice(0, 8)}` : "";
    $("subtitle").textContent = `${data.game} v${data.game_version} · ${data.tick_rate} ticks/s${match} · ${data.status}`;
    if (!schema.world && !hook) {
      $("stage").hidden = true;
      $("main").classList.add("nomap");
    }
    buildControls();
    if (data.follow && data.follow in data.streams) setFollow(data.follow);
    else render();
    return true;
  }

  const ready = start().catch((err) => {
    const message = `cannot play this replay: ${err && err.message ? err.message : err}`;
    $("status").textContent = message;
    console.error(message);
    throw err;
  });

  window.tickline = {
    ready,
    tick: () => Math.floor(t + 1e-9),
    time: () => t,
    seek,
    play,
    pause,
    step,
    playing: () => playing,
    setSpeed,
    speed: () => speed,
    follow: setFollow,
    following: () => (follow === "full" ? 0 : Number(follow)),
    entities: () =>
      scene(t).entities.map((e) => ({ table: e.table, id: e.id, x: e.x, y: e.y, colour: e.colour, faded: e.faded })),
    canvasPoint: (x, y) => toCanvas(x, y),
    colourOf,
    view: () => scene(t).view,
    counters,
  };
})();
