// archlab's page: the live campaign stream, the chat, the replay stepper. No framework,
// no CDN: this file is all the client code there is.
"use strict";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- live: server-sent events from /c/ID/live; the board is swapped in when the ledger moves
function startLive(section) {
  let lastSeq = null;
  const source = new EventSource(section.dataset.live);
  window.archlabLive = { updates: 0, state: null };
  source.onmessage = async (msg) => {
    const state = JSON.parse(msg.data);
    window.archlabLive.state = state;
    const flight = document.getElementById("flight");
    if (flight) {
      flight.replaceChildren(...state.in_flight.map((f) => {
        const p = f.progress || {};
        const bits = Object.entries(p).map(([k, v]) => `${k} ${typeof v === "number" ? +v.toFixed(4) : v}`);
        return el("div", "live", `#${f.id} ${f.name || ""} in flight: ${bits.join(", ")}`);
      }));
    }
    if (lastSeq !== null && state.seq !== lastSeq) {
      const reply = await fetch(section.dataset.board, { credentials: "same-origin" });
      if (reply.ok) {
        document.getElementById("board").innerHTML = await reply.text();
        window.archlabLive.updates += 1;
      }
    }
    lastSeq = state.seq;
  };
}

// -- chat: POST the question, read the answer as it streams (tool calls, results, answer)
function startChat(form) {
  const conversation = document.getElementById("conversation");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const box = form.querySelector("textarea");
    const question = box.value.trim();
    if (!question) return;
    const button = form.querySelector("button");
    button.disabled = true;
    conversation.append(el("div", "msg user", question));
    box.value = "";
    const pending = el("div", "msg muted thinking", "thinking…");
    conversation.append(pending);
    try {
      const reply = await fetch(form.dataset.url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ question, session: conversation.dataset.session }),
      });
      if (!reply.ok) {
        conversation.append(el("div", "msg warn", await reply.text()));
        return;
      }
      const reader = reply.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (chunk.startsWith("data: ")) show(JSON.parse(chunk.slice(6)));
        }
      }
    } finally {
      pending.remove();
      button.disabled = false;
    }
  });

  function show(event) {
    if (event.type === "tool_call") {
      conversation.append(el("div", "msg call", `→ ${event.name}(${JSON.stringify(event.arguments)})`));
    } else if (event.type === "tool_result") {
      const details = el("details", "msg tool");
      details.append(el("summary", "", `result of ${event.name}`));
      details.append(el("pre", "", JSON.stringify(event.result, null, 1).slice(0, 4000)));
      conversation.append(details);
    } else if (event.type === "answer") {
      conversation.append(el("div", "msg answer", event.text));
    } else if (event.type === "error") {
      conversation.append(el("div", "msg warn", event.error));
    }
    const pending = conversation.querySelector(".thinking");
    if (pending) conversation.append(pending);
  }
}

// -- replay: one experiment's story at a time
function startSteps(list) {
  const steps = Array.from(list.querySelectorAll(":scope > li"));
  let at = 0;
  const show = () => {
    steps.forEach((s, i) => s.classList.toggle("hidden", i > at));
    document.getElementById("step-at").textContent = String(at + 1);
  };
  document.getElementById("step-next").onclick = () => { at = Math.min(steps.length - 1, at + 1); show(); };
  document.getElementById("step-prev").onclick = () => { at = Math.max(0, at - 1); show(); };
  document.getElementById("step-all").onclick = () => { at = steps.length - 1; show(); };
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) startLive(live);
  const chat = document.getElementById("chat-form");
  if (chat) startChat(chat);
  const steps = document.getElementById("steps");
  if (steps) startSteps(steps);
});
