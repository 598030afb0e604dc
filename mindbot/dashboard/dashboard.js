/*
 * MindBot dashboard: live sessions, history and transcripts, latency and cost per day, and the
 * knowledge base, read from the REST API (/api/v1) with the operator's API key.
 *
 * Rules this file keeps:
 * - The key lives in sessionStorage (this tab only) and travels in the Authorization header,
 *   never in a URL. Without a key, or when the server refuses it (401/403), the page shows no
 *   data and asks for one.
 * - Every string from the server becomes a text node or a plain attribute value (see h() and
 *   svg()): transcripts are untrusted text, and nothing here ever parses them as markup.
 * - Charts are inline SVG drawn by the small functions below; no framework, no build step,
 *   nothing loaded from elsewhere.
 */
"use strict";

(() => {
  const KEY_STORAGE = "mindbot.dashboard.key";
  const API = new URL("../api/v1/", window.location.href);
  const POLL_MS = 2000;
  const RETRY_MS = 5000;
  const HISTORY_PAGE = 20;
  // Live sessions are looked for among those started this recently (no call lasts a day).
  const LIVE_WINDOW_HOURS = 24;
  const LIVE_LIMIT = 100;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    key: null,
    generation: 0, // bumped at each sign-in and sign-out: older answers are dropped
    pollTimer: null,
    pollBusy: false,
    live: null, // Map id -> session, null before the first answer
    history: { offset: 0, persona: "", nextOffset: null },
    transcriptId: null,
    personas: [],
    currency: "USD",
  };

  const $ = (id) => document.getElementById(id);

  // --------------------------------------------------------------------------------------
  // Building the page: server strings only ever become text nodes or attribute values.

  function append(parent, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return parent;
  }

  function setAttributes(element, attributes) {
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      // Event handlers and links are never built from data.
      if (/^on/i.test(name) || name === "href" || name === "src") {
        throw new Error(`refusing to set ${name}`);
      }
      element.setAttribute(name, value === true ? "" : String(value));
    }
    return element;
  }

  function h(tag, attributes, ...children) {
    return append(setAttributes(document.createElement(tag), attributes), children);
  }

  function svg(tag, attributes, ...children) {
    return append(setAttributes(document.createElementNS(SVG_NS, tag), attributes), children);
  }

  // --------------------------------------------------------------------------------------
  // Formatting

  function formatTime(iso) {
    if (!iso) return "—";
    const moment = new Date(iso);
    if (Number.isNaN(moment.getTime())) return String(iso);
    return moment.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  }

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
    const total = Math.max(0, Math.round(seconds));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const secs = total % 60;
    if (hours) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
    if (minutes) return `${minutes} min ${String(secs).padStart(2, "0")} s`;
    return `${secs} s`;
  }

  function formatSeconds(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "—";
    return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  }

  function formatNumber(value, digits = 0) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "—";
    return value.toLocaleString(undefined, { maximumFractionDigits: digits });
  }

  function formatMoney(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "—";
    const digits = { minimumFractionDigits: 2, maximumFractionDigits: value && value < 1 ? 4 : 2 };
    try {
      const style = { style: "currency", currency: state.currency, ...digits };
      return value.toLocaleString(undefined, style);
    } catch {
      return `${value.toLocaleString(undefined, digits)} ${state.currency}`;
    }
  }

  function formatPercent(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "—";
    return value.toLocaleString(undefined, { style: "percent", maximumFractionDigits: 0 });
  }

  function secondsBetween(start, end) {
    const from = new Date(start).getTime();
    const to = end ? new Date(end).getTime() : Date.now();
    return Number.isFinite(from) && Number.isFinite(to) ? (to - from) / 1000 : null;
  }

  function shortId(id) {
    return String(id).slice(0, 8);
  }

  function isoDay(date) {
    return date.toISOString().slice(0, 10);
  }

  // --------------------------------------------------------------------------------------
  // The API

  class AuthError extends Error {}

  class HttpError extends Error {
    constructor(status, message, retryAfter = 0) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function detailOf(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    } catch {
      // not JSON: the status says enough
    }
    return `${response.status} ${response.statusText}`.trim();
  }

  /** GET an API path (relative to /api/v1/) with the key; the JSON answer. */
  async function request(path, params = {}) {
    const generation = state.generation;
    const url = new URL(path, API);
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    let response;
    try {
      response = await fetch(url, {
        headers: { Authorization: `Bearer ${state.key}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch {
      throw new HttpError(0, "The server cannot be reached");
    }
    if (generation !== state.generation) throw new AuthError("signed out meanwhile");
    if (response.ok) return response.json();
    const detail = await detailOf(response);
    if (response.status === 401 || response.status === 403) {
      askForKey(response.status === 401 ? `The server refused the key: ${detail}.` : `${detail}.`);
      throw new AuthError(detail);
    }
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw new HttpError(response.status, detail, retryAfter);
  }

  function describe(error) {
    if (error.status === 429) return `Rate limited by the server: ${error.message}`;
    return error.message || String(error);
  }

  function notify(text) {
    $("notice").textContent = text;
  }

  // --------------------------------------------------------------------------------------
  // Signing in and out

  function showLogin(message) {
    $("app").hidden = true;
    $("nav").hidden = true;
    $("sign-out").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    document.body.dataset.state = "signed-out";
    const input = $("api-key");
    input.value = "";
    input.focus();
  }

  function showApp() {
    $("login").hidden = true;
    $("login-error").textContent = "";
    $("app").hidden = false;
    $("nav").hidden = false;
    $("sign-out").hidden = false;
    document.body.dataset.state = "signed-in";
  }

  /** Forget the key and every figure shown with it, and ask for a key (again). */
  function askForKey(message) {
    state.generation += 1;
    state.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    clearData();
    showLogin(message);
  }

  function clearData() {
    state.live = null;
    state.history = { offset: 0, persona: "", nextOffset: null };
    state.transcriptId = null;
    state.personas = [];
    for (const id of ["live-table", "history-table", "analytics-table"]) {
      $(id).tBodies[0].replaceChildren();
    }
    for (const id of [
      "notice",
      "live-status",
      "history-page",
      "transcript-meta",
      "turns",
      "analytics-status",
      "analytics-totals",
      "latency-chart",
      "cost-chart",
      "kb-collections",
    ]) {
      $(id).replaceChildren();
    }
    $("history-persona").replaceChildren(h("option", { value: "" }, "All"));
    $("transcript").hidden = true;
    $("analytics-charts").hidden = true;
    $("live-empty").hidden = false;
    $("history-empty").hidden = true;
  }

  async function signIn(key) {
    state.generation += 1;
    state.key = key;
    try {
      state.personas = await request("personas");
    } catch (error) {
      if (!(error instanceof AuthError)) {
        state.key = null;
        showLogin(`The dashboard could not start: ${describe(error)}`);
      }
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    showApp();
    fillPersonaFilter();
    loadHistory();
    loadAnalytics();
    loadKnowledgeBase();
    pollLive();
  }

  // --------------------------------------------------------------------------------------
  // Live sessions: polled every POLL_MS while the tab is visible

  function schedulePoll(delay) {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    if (state.key && !document.hidden) state.pollTimer = setTimeout(pollLive, delay);
  }

  async function pollLive() {
    if (state.pollBusy || !state.key) return;
    state.pollBusy = true;
    let delay = POLL_MS;
    try {
      const since = new Date(Date.now() - LIVE_WINDOW_HOURS * 3600 * 1000).toISOString();
      const page = await request("sessions", { since, limit: LIVE_LIMIT });
      renderLive(page.items.filter((session) => session.live));
    } catch (error) {
      if (error instanceof AuthError) return;
      delay = error.status === 429 ? Math.max(error.retryAfter, 1) * 1000 : RETRY_MS;
      $("live-status").textContent = `Not updated: ${describe(error)}. Retrying…`;
    } finally {
      state.pollBusy = false;
    }
    schedulePoll(delay);
  }

  function renderLive(sessions) {
    const before = state.live;
    state.live = new Map(sessions.map((session) => [session.id, session]));
    const rows = sessions.map((session) =>
      h(
        "tr",
        { "data-session": session.id },
        h("td", {}, formatTime(session.started_at)),
        h("td", {}, formatDuration(secondsBetween(session.started_at, null))),
        h("td", {}, session.persona),
        h("td", {}, session.transport),
        h("td", {}, session.user_id ?? "—"),
        h("td", {}, transcriptButton(session)),
      ),
    );
    $("live-table").tBodies[0].replaceChildren(...rows);
    $("live-empty").hidden = sessions.length > 0;
    $("live-status").textContent =
      `${sessions.length} in progress · updated ${new Date().toLocaleTimeString()}`;
    if (before === null) return;
    const started = sessions.filter((session) => !before.has(session.id));
    const ended = [...before.keys()].filter((id) => !state.live.has(id));
    if (!started.length && !ended.length) return;
    notify(
      [
        started.length ? `${started.length} session(s) started.` : "",
        ended.length ? `${ended.length} session(s) ended.` : "",
      ]
        .join(" ")
        .trim(),
    );
    if (state.history.offset === 0) loadHistory();
    if (ended.length) {
      loadAnalytics();
      if (ended.includes(state.transcriptId)) openTranscript(state.transcriptId, false);
    }
  }

  function transcriptButton(session) {
    return h(
      "button",
      {
        type: "button",
        class: "link",
        "data-session": session.id,
        "aria-label": `Transcript of session ${shortId(session.id)}`,
      },
      shortId(session.id),
    );
  }

  // --------------------------------------------------------------------------------------
  // History

  function fillPersonaFilter() {
    const select = $("history-persona");
    select.replaceChildren(
      h("option", { value: "" }, "All"),
      ...state.personas.map((p) => h("option", { value: p.name }, `${p.display_name} (${p.name})`)),
    );
  }

  async function loadHistory() {
    const { offset, persona } = state.history;
    let page;
    try {
      page = await request("sessions", { limit: HISTORY_PAGE, offset, persona });
    } catch (error) {
      if (!(error instanceof AuthError)) notify(`History not loaded: ${describe(error)}`);
      return;
    }
    if (offset !== state.history.offset || persona !== state.history.persona) return;
    state.history.nextOffset = page.next_offset;
    const rows = page.items.map((session) =>
      h(
        "tr",
        { "data-session": session.id, class: session.live ? "is-live" : null },
        h("td", {}, formatTime(session.started_at)),
        h("td", {}, formatDuration(secondsBetween(session.started_at, session.ended_at))),
        h("td", {}, session.persona),
        h("td", {}, session.transport),
        h("td", {}, session.user_id ?? "—"),
        h("td", {}, sessionStatus(session)),
        h("td", {}, transcriptButton(session)),
      ),
    );
    $("history-table").tBodies[0].replaceChildren(...rows);
    $("history-empty").hidden = rows.length > 0;
    $("history-newer").disabled = offset === 0;
    $("history-older").disabled = page.next_offset === null;
    $("history-page").textContent = rows.length
      ? `Sessions ${offset + 1}–${offset + rows.length}`
      : "";
  }

  function sessionStatus(session) {
    if (session.live) return h("strong", { class: "badge live" }, "live");
    if (!session.ended_at) return "unfinished";
    return session.end_reason || "ended";
  }

  // --------------------------------------------------------------------------------------
  // The transcript viewer

  async function openTranscript(id, focus = true) {
    state.transcriptId = id;
    let detail;
    try {
      detail = await request(`sessions/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!(error instanceof AuthError)) notify(`Transcript not loaded: ${describe(error)}`);
      return;
    }
    if (state.transcriptId !== id) return;
    renderTranscript(detail);
    const section = $("transcript");
    section.hidden = false;
    if (focus) {
      $("transcript-title").focus();
      section.scrollIntoView({ block: "start" });
    }
  }

  function renderTranscript(detail) {
    $("transcript-title").textContent = `Transcript of session ${shortId(detail.id)}`;
    const facts = [
      ["Session", detail.id],
      ["Persona", detail.persona],
      ["Transport", detail.transport],
      ["User", detail.user_id ?? "—"],
      ["Started", formatTime(detail.started_at)],
      ["Ended", detail.live ? "in progress" : formatTime(detail.ended_at)],
      ["Duration", formatDuration(secondsBetween(detail.started_at, detail.ended_at))],
      ["End reason", detail.end_reason || "—"],
    ];
    for (const [name, value] of Object.entries(detail.stats || {})) {
      if (value === null || typeof value === "object" || SHOWN_STATS.has(name)) continue;
      facts.push(statFact(name, value));
    }
    $("transcript-meta").replaceChildren(
      ...facts.map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", {}, value))),
    );
    $("turns").replaceChildren(...detail.turns.map(renderTurn));
  }

  // Figures of the session's stats that the facts above already show.
  const SHOWN_STATS = new Set([
    "session_id",
    "end_reason",
    "duration_secs",
    "started_at",
    "ended_at",
  ]);

  function statFact(name, value) {
    if (typeof value !== "number") return [name.replaceAll("_", " "), value];
    if (name.endsWith("_secs")) {
      return [name.slice(0, -5).replaceAll("_", " "), formatSeconds(value)];
    }
    return [name.replaceAll("_", " "), formatNumber(value, 3)];
  }

  function renderTurn(turn) {
    const speaker = turn.role === "user" ? "Caller" : "MindBot";
    return h(
      "li",
      { class: `turn ${turn.role === "user" ? "user" : "assistant"}` },
      h(
        "p",
        { class: "turn-head" },
        h("strong", {}, speaker),
        " ",
        h("time", { datetime: turn.started_at }, formatTime(turn.started_at)),
        turn.interrupted ? h("span", { class: "badge" }, "interrupted") : null,
        typeof turn.latency_secs === "number"
          ? h("span", { class: "badge" }, `latency ${formatSeconds(turn.latency_secs)}`)
          : null,
      ),
      h("p", { class: "turn-text" }, turn.text),
      turn.emotion ? renderEmotion(turn.emotion) : null,
      turn.sources && turn.sources.length ? renderSources(turn.sources) : null,
      turn.tool_calls && turn.tool_calls.length ? renderToolCalls(turn.tool_calls) : null,
      turn.stages && Object.keys(turn.stages).length
        ? renderStages(turn.stages, turn.latency_secs)
        : null,
    );
  }

  function renderEmotion(emotion) {
    const parts = [];
    for (const name of ["valence", "arousal", "confidence"]) {
      if (typeof emotion[name] === "number") parts.push(`${name} ${emotion[name].toFixed(2)}`);
    }
    return h(
      "p",
      { class: "emotion" },
      "Emotion: ",
      h("strong", {}, emotion.label ?? "unknown"),
      parts.length ? ` (${parts.join(", ")})` : "",
    );
  }

  function renderSources(sources) {
    return h(
      "div",
      { class: "sources" },
      h("p", { class: "minor-title" }, `Knowledge-base sources (${sources.length})`),
      h(
        "ul",
        {},
        sources.map((source) =>
          h(
            "li",
            {},
            source.label ?? source.title ?? source.doc_id ?? "a passage",
            typeof source.score === "number" ? ` · score ${source.score.toFixed(2)}` : "",
          ),
        ),
      ),
    );
  }

  function renderToolCalls(calls) {
    return h(
      "table",
      { class: "tools" },
      h("caption", {}, `Tool calls (${calls.length})`),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Tool"),
          h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col" }, "Duration"),
          h("th", { scope: "col" }, "Attempts"),
        ),
      ),
      h(
        "tbody",
        {},
        calls.map((call) =>
          h(
            "tr",
            {},
            h("td", {}, call.name ?? "?"),
            h(
              "td",
              { class: `status-${call.status === "ok" ? "ok" : "other"}` },
              call.status ?? "?",
            ),
            h(
              "td",
              {},
              typeof call.duration_ms === "number"
                ? `${formatNumber(call.duration_ms, 1)} ms`
                : "—",
            ),
            h("td", {}, call.attempts ?? "—"),
          ),
        ),
      ),
    );
  }

  /** A waterfall of the reply's latency: one bar per stage, each starting where the last ended. */
  function renderStages(stages, total) {
    const entries = Object.entries(stages).filter(
      ([, seconds]) => typeof seconds === "number" && Number.isFinite(seconds) && seconds >= 0,
    );
    const sum = entries.reduce((acc, [, seconds]) => acc + seconds, 0);
    const scale = Math.max(sum, typeof total === "number" ? total : 0) || 1;
    const row = 22;
    const labelWidth = 190;
    const barWidth = 340;
    const width = labelWidth + barWidth + 70;
    const height = entries.length * row + 4;
    const summary = entries.map(([label, seconds]) => `${label} ${formatSeconds(seconds)}`);
    const chart = svg("svg", {
      class: "stages",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": `Latency by stage: ${summary.join(", ")}`,
    });
    let start = 0;
    entries.forEach(([label, seconds], i) => {
      const y = i * row + 2;
      chart.append(
        svg("text", { x: labelWidth - 8, y: y + 15, "text-anchor": "end", class: "axis" }, label),
        svg(
          "rect",
          {
            class: "stage",
            "data-stage": label,
            x: (labelWidth + (start / scale) * barWidth).toFixed(1),
            y: y + 3,
            width: Math.max((seconds / scale) * barWidth, 1).toFixed(1),
            height: row - 6,
          },
          svg("title", {}, `${label}: ${formatSeconds(seconds)}`),
        ),
        svg(
          "text",
          { x: labelWidth + barWidth + 6, y: y + 15, class: "axis" },
          formatSeconds(seconds),
        ),
      );
      start += seconds;
    });
    return h("figure", { class: "stage-figure" }, h("figcaption", {}, "Latency by stage"), chart);
  }

  // --------------------------------------------------------------------------------------
  // Latency and cost per day

  async function loadAnalytics() {
    const days = Number($("analytics-days").value) || 14;
    const until = new Date();
    const since = new Date(until.getTime() - (days - 1) * 86400 * 1000);
    const status = $("analytics-status");
    let report;
    try {
      report = await request("analytics/daily", { since: isoDay(since), until: isoDay(until) });
    } catch (error) {
      if (error instanceof AuthError) return;
      $("analytics-charts").hidden = true;
      status.textContent =
        error.status === 404
          ? "Analytics unavailable: this server has no analytics API (/api/v1/analytics/daily)."
          : `Analytics unavailable: ${describe(error)}`;
      status.dataset.state = "unavailable";
      return;
    }
    state.currency = report.currency || "USD";
    status.dataset.state = "ok";
    status.textContent =
      `From ${report.since} to ${report.until} (UTC days), in ${state.currency}.`;
    renderAnalytics(report);
    $("analytics-charts").hidden = false;
  }

  function renderAnalytics(report) {
    const days = report.days || [];
    const totals = report.totals || {};
    const facts = [
      ["Sessions", formatNumber(totals.sessions)],
      ["Turns", formatNumber(totals.turns)],
      ["Latency p50", formatSeconds(totals.latency_p50)],
      ["Latency p95", formatSeconds(totals.latency_p95)],
      [
        "Tool calls",
        `${formatNumber(totals.tool_calls)} (${formatPercent(totals.tool_success_rate)} ok)`,
      ],
      ["Errors", formatNumber(totals.errors)],
      [
        "LLM tokens",
        `${formatNumber(totals.llm_prompt_tokens)} in, ` +
          `${formatNumber(totals.llm_completion_tokens)} out`,
      ],
      ["TTS characters", formatNumber(totals.tts_characters)],
      ["STT audio", formatDuration(totals.stt_audio_secs)],
      ["Cost", formatMoney(totals.cost)],
    ];
    $("analytics-totals").replaceChildren(
      ...facts.map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", {}, value))),
    );
    $("latency-chart").replaceChildren(
      lineChart(days, [
        { key: "latency_p50", name: "p50", className: "p50" },
        { key: "latency_p95", name: "p95", className: "p95" },
      ]),
      legend([
        ["p50", "median (p50)"],
        ["p95", "p95"],
      ]),
    );
    $("cost-caption").textContent = `Cost per day (${state.currency})`;
    $("cost-chart").replaceChildren(barChart(days, "cost"));
    $("analytics-table").tBodies[0].replaceChildren(
      ...days.map((day) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, day.day),
          h("td", {}, formatNumber(day.sessions)),
          h("td", {}, formatNumber(day.turns)),
          h("td", {}, formatSeconds(day.latency_p50)),
          h("td", {}, formatSeconds(day.latency_p95)),
          h("td", {}, formatNumber(day.tool_calls)),
          h("td", {}, formatNumber(day.errors)),
          h("td", {}, formatMoney(day.cost)),
        ),
      ),
    );
  }

  const CHART = { width: 720, height: 240, left: 64, right: 16, top: 14, bottom: 34 };

  /** Nice round axis ticks from 0 to at least ``max``. */
  function ticks(max) {
    if (!(max > 0)) return [0, 1];
    const rough = max / 4;
    const power = 10 ** Math.floor(Math.log10(rough));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
    const out = [];
    for (let value = 0; value < max + step * 0.999; value += step) out.push(value);
    return out;
  }

  /** The frame shared by both charts: the y grid with its labels and the days below. */
  function chartFrame(days, yTicks, formatTick, xOf) {
    const { width, height, left, right, top, bottom } = CHART;
    const yMax = yTicks[yTicks.length - 1];
    const yOf = (value) => top + (1 - value / yMax) * (height - top - bottom);
    const grid = yTicks.map((value) =>
      svg(
        "g",
        { class: "tick" },
        svg("line", { x1: left, x2: width - right, y1: yOf(value), y2: yOf(value), class: "grid" }),
        svg(
          "text",
          { x: left - 6, y: yOf(value) + 4, "text-anchor": "end", class: "axis" },
          formatTick(value),
        ),
      ),
    );
    const every = Math.ceil(days.length / 10);
    const labels = days.map((day, i) =>
      // Every few days, and the last one, unless it would crowd the label before it.
      (i % every === 0 && days.length - 1 - i > every / 2) || i === days.length - 1
        ? svg(
            "text",
            { x: xOf(i), y: height - bottom + 18, "text-anchor": "middle", class: "axis" },
            String(day.day).slice(5),
          )
        : null,
    );
    return { yOf, parts: [...grid, ...labels] };
  }

  function lineChart(days, series) {
    const { width, height, left, right } = CHART;
    const plotWidth = width - left - right;
    const xOf = (i) =>
      left + (days.length > 1 ? (i * plotWidth) / (days.length - 1) : plotWidth / 2);
    const values = days.flatMap((day) => series.map((s) => day[s.key])).filter(Number.isFinite);
    const yTicks = ticks(Math.max(0, ...values));
    const frame = chartFrame(days, yTicks, (v) => `${formatNumber(v, 2)} s`, xOf);
    const chart = svg("svg", {
      class: "chart-svg latency",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": values.length
        ? `Latency per day, p50 and p95, up to ${formatSeconds(Math.max(...values))}`
        : "No latency measured in this period",
    });
    append(chart, frame.parts);
    for (const s of series) {
      // A day without a measurement breaks the line rather than dropping to zero.
      let path = "";
      let pen = "M";
      days.forEach((day, i) => {
        const value = day[s.key];
        if (!Number.isFinite(value)) {
          pen = "M";
          return;
        }
        path += `${pen}${xOf(i).toFixed(1)},${frame.yOf(value).toFixed(1)} `;
        pen = "L";
      });
      if (path) chart.append(svg("path", { d: path.trim(), class: `line ${s.className}` }));
      days.forEach((day, i) => {
        const value = day[s.key];
        if (!Number.isFinite(value)) return;
        chart.append(
          svg(
            "circle",
            {
              class: `point ${s.className}`,
              "data-day": day.day,
              cx: xOf(i).toFixed(1),
              cy: frame.yOf(value).toFixed(1),
              r: 4,
            },
            svg("title", {}, `${day.day}: ${s.name} ${formatSeconds(value)}`),
          ),
        );
      });
    }
    return chart;
  }

  function barChart(days, key) {
    const { width, height, left, right, bottom } = CHART;
    const plotWidth = width - left - right;
    const slot = plotWidth / Math.max(days.length, 1);
    const xOf = (i) => left + slot * (i + 0.5);
    const values = days.map((day) => day[key]).filter(Number.isFinite);
    const yTicks = ticks(Math.max(0, ...values));
    const frame = chartFrame(days, yTicks, formatMoney, xOf);
    const chart = svg("svg", {
      class: "chart-svg cost",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": `Cost per day, ${formatMoney(values.reduce((a, b) => a + b, 0))} in all`,
    });
    append(chart, frame.parts);
    const base = height - bottom;
    days.forEach((day, i) => {
      const value = Number.isFinite(day[key]) ? day[key] : 0;
      const top = frame.yOf(value);
      const barWidth = Math.max(Math.min(slot * 0.7, 40), 2);
      chart.append(
        svg(
          "rect",
          {
            class: "bar",
            "data-day": day.day,
            x: (xOf(i) - barWidth / 2).toFixed(1),
            y: top.toFixed(1),
            width: barWidth.toFixed(1),
            height: Math.max(base - top, 0).toFixed(1),
          },
          svg("title", {}, `${day.day}: ${formatMoney(value)}`),
        ),
      );
    });
    return chart;
  }

  function legend(items) {
    return h(
      "ul",
      { class: "legend" },
      items.map(([className, text]) =>
        h("li", {}, h("span", { class: `swatch ${className}`, "aria-hidden": "true" }), text),
      ),
    );
  }

  // --------------------------------------------------------------------------------------
  // The knowledge base

  async function loadKnowledgeBase() {
    const container = $("kb-collections");
    const collections = new Map();
    for (const persona of state.personas) {
      const users = collections.get(persona.knowledge_base) || [];
      users.push(persona.display_name || persona.name);
      collections.set(persona.knowledge_base, users);
    }
    const names = [...collections.keys()].sort();
    const parts = await Promise.all(
      names.map(async (name) => {
        let body;
        try {
          const documents = await request(`kb/${encodeURIComponent(name)}/documents`);
          body = documents.length
            ? documentsTable(documents)
            : h("p", { class: "empty" }, "No documents.");
        } catch (error) {
          if (error instanceof AuthError) return null;
          body = h(
            "p",
            { class: "empty" },
            error.status === 404 ? "No documents yet." : `Not loaded: ${describe(error)}`,
          );
        }
        return h(
          "section",
          { class: "collection", "data-collection": name },
          h("h3", {}, `Collection “${name}”`),
          h("p", { class: "minor" }, `Used by ${collections.get(name).join(", ")}.`),
          body,
        );
      }),
    );
    if (state.key) container.replaceChildren(...parts.filter(Boolean));
  }

  function documentsTable(documents) {
    return h(
      "table",
      { class: "documents" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Title"),
          h("th", { scope: "col" }, "Source"),
          h("th", { scope: "col" }, "Passages"),
          h("th", { scope: "col" }, "Updated"),
        ),
      ),
      h(
        "tbody",
        {},
        documents.map((doc) =>
          h(
            "tr",
            { "data-doc": doc.doc_id },
            h("td", {}, doc.title),
            h("td", { class: "source" }, doc.source),
            h("td", {}, formatNumber(doc.chunks)),
            h("td", {}, formatTime(doc.updated_at)),
          ),
        ),
      ),
    );
  }

  // --------------------------------------------------------------------------------------
  // Wiring

  function onTranscriptClick(event) {
    const button = event.target.closest("button[data-session]");
    if (button) openTranscript(button.dataset.session);
  }

  function start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      $("api-key").value = "";
      if (key) signIn(key);
    });
    $("sign-out").addEventListener("click", () =>
      askForKey("Key forgotten. Enter a key to continue."),
    );
    $("live-table").addEventListener("click", onTranscriptClick);
    $("history-table").addEventListener("click", onTranscriptClick);
    $("history-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      state.history.persona = $("history-persona").value;
      state.history.offset = 0;
      loadHistory();
    });
    $("history-newer").addEventListener("click", () => {
      state.history.offset = Math.max(0, state.history.offset - HISTORY_PAGE);
      loadHistory();
    });
    $("history-older").addEventListener("click", () => {
      if (state.history.nextOffset === null) return;
      state.history.offset = state.history.nextOffset;
      loadHistory();
    });
    $("transcript-refresh").addEventListener("click", () => {
      if (state.transcriptId) openTranscript(state.transcriptId, false);
    });
    $("transcript-close").addEventListener("click", () => {
      state.transcriptId = null;
      $("transcript").hidden = true;
    });
    $("analytics-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadAnalytics();
    });
    $("kb-refresh").addEventListener("click", async () => {
      try {
        state.personas = await request("personas");
      } catch (error) {
        if (!(error instanceof AuthError)) notify(`Personas not loaded: ${describe(error)}`);
        return;
      }
      loadKnowledgeBase();
    });
    document.addEventListener("visibilitychange", () => {
      // A hidden tab stops polling (it spends the key's rate limit for nobody).
      if (document.hidden) {
        clearTimeout(state.pollTimer);
        state.pollTimer = null;
      } else if (state.key) {
        pollLive();
      }
    });

    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) signIn(key);
    else showLogin("");
  }

  start();
})();
