// Roundhouse status page: polls /api/status every second and draws what it gets.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 });
const us = (n) => (n === null || n === undefined) ? "–" : (n >= 1000 ? fmt(n / 1000) + " ms" : fmt(n) + " µs");
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

function rows(tbody, items, render) {
  tbody.innerHTML = items.map(render).join("");
}

// A small line chart: each series is an array of numbers (null = gap), drawn over the last 60 s.
function chart(canvas, series, colors) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const values = series.flat().filter((v) => v !== null && v !== undefined);
  const max = Math.max(1, ...values) * 1.1;
  ctx.strokeStyle = "#e3e7ee"; ctx.fillStyle = "#6b7585"; ctx.font = "11px system-ui, sans-serif"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + (h - pad) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad + 20, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(fmt(max * (4 - i) / 4), 0, y + 4);
  }
  series.forEach((points, k) => {
    ctx.strokeStyle = colors[k]; ctx.lineWidth = 2; ctx.beginPath();
    let drawing = false;
    points.forEach((v, i) => {
      const x = pad + 20 + (w - pad - 20) * (i + 60 - points.length) / 59;
      if (v === null || v === undefined) { drawing = false; return; }
      const y = pad / 2 + (h - pad) * (1 - v / max);
      if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      drawing = true;
    });
    ctx.stroke();
  });
}

let filter = "";
$("filter").addEventListener("input", (e) => { filter = e.target.value; });

async function refresh() {
  try {
    const response = await fetch("/api/status?top=25&sessions=25&q=" + encodeURIComponent(filter), { cache: "no-store" });
    const s = await response.json();
    $("version").textContent = "v" + s.version;
    $("uptime").textContent = "up " + fmt(s.uptime_seconds) + " s";
    $("state").textContent = s.ready ? "ready" : "shutting down";
    $("state").className = s.ready ? "ok" : "bad";
    const rate = s.series.calls_per_sec.length ? s.series.calls_per_sec[s.series.calls_per_sec.length - 1] : null;
    $("c-rate").textContent = fmt(rate);
    const realm0 = s.realms.reduce((a, r) => (r.calls_per_sec >= (a ? a.calls_per_sec : -1) ? r : a), null);
    $("c-p50").textContent = us(realm0 && realm0.p50_us);
    $("c-p99").textContent = us(realm0 && realm0.p99_us);
    $("c-sessions").textContent = fmt(s.totals.sessions);
    $("c-regs").textContent = fmt(s.totals.registrations);
    $("c-inflight").textContent = fmt(s.totals.calls_in_flight);
    chart($("chart-rate"), [s.series.calls_per_sec], ["#2563eb"]);
    chart($("chart-latency"), [s.series.p50_us, s.series.p99_us], ["#2563eb", "#c2410c"]);
    rows(document.querySelector("#realms tbody"), s.realms, (r) =>
      `<tr><td>${esc(r.name)}</td><td class="n">${fmt(r.sessions)}</td><td class="n">${fmt(r.registrations)}</td>` +
      `<td class="n">${fmt(r.subscriptions)}</td><td class="n">${fmt(r.calls_per_sec)}</td><td class="n">${fmt(r.p50_us)}</td>` +
      `<td class="n">${fmt(r.p99_us)}</td><td class="n">${fmt(r.calls_in_flight)}</td><td class="n">${fmt(r.calls_queued)}</td>` +
      `<td class="n calls-total">${fmt(r.calls_total)}</td></tr>`);
    $("regs-note").textContent = `top ${s.registrations.shown.length} of ${fmt(s.registrations.total)}, busiest first`;
    rows(document.querySelector("#registrations tbody"), s.registrations.shown, (g) =>
      `<tr class="registration" data-uri="${esc(g.uri)}"><td><b>${esc(g.uri)}</b><div class="members">` +
      g.members.map((m) => `<span>session ${m.session}: ${fmt(m.in_flight)} in flight, ${fmt(m.served)} served</span>`).join("") +
      `</div></td><td>${esc(g.realm)}</td><td>${esc(g.rule)}</td><td>${esc(g.match)}</td><td class="n">${fmt(g.member_count)}</td>` +
      `<td class="n">${fmt(g.calls_per_sec)}</td><td class="n served">${fmt(g.calls)}</td><td class="n">${fmt(g.in_flight)}</td></tr>`);
    $("sessions-note").textContent = `top ${s.sessions.shown.length} of ${fmt(s.sessions.total)}, busiest first`;
    rows(document.querySelector("#sessions tbody"), s.sessions.shown, (x) =>
      `<tr><td>${x.id}</td><td>${esc(x.realm)}</td><td>${esc(x.transport)}</td><td>${esc(x.serializer)}</td><td>${esc(x.peer)}</td>` +
      `<td>${esc(x.authid)}</td><td class="n">${fmt(x.calls_in_flight)}</td><td class="n">${fmt(x.serving)}</td>` +
      `<td class="n">${fmt(x.served)}</td><td class="n">${fmt(x.queued_bytes)}</td></tr>`);
    document.body.dataset.updated = String(Date.now());
  } catch (error) {
    $("state").textContent = "unreachable";
    $("state").className = "bad";
  }
}

refresh();
setInterval(refresh, 1000);
