// The live page: follows /dashboard/events (server-sent events) and keeps the calls on the page
// up to date. Everything a caller said is put in with textContent, never as HTML.
"use strict";
(function () {
  const section = document.getElementById("live-calls");
  const template = document.getElementById("call-template");
  const empty = document.getElementById("no-calls");
  const status = document.getElementById("live-status");
  if (!section || !template) return;

  const WHO = { caller: "Caller", assistant: "Assistant" };

  function articleFor(sid) {
    for (const article of section.querySelectorAll("article.call")) {
      if (article.dataset.callSid === sid) return article;
    }
    return null;
  }

  function updateEmpty() {
    empty.hidden = section.querySelector("article.call:not(.ended)") !== null;
  }

  function lineItem(line) {
    const item = document.createElement("li");
    if (line.item_id) item.dataset.itemId = line.item_id;
    item.className = "line " + (WHO[line.role] ? line.role : "system") + (line.interrupted ? " interrupted" : "");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = WHO[line.role] || "Note";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    item.append(who, " ", text);
    if (line.interrupted) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "interrupted";
      item.append(" ", tag);
    }
    return item;
  }

  function setCaller(article, call) {
    article.querySelector(".caller").textContent = call.caller || "Unknown caller";
    article.querySelector(".number").textContent = call.number;
    article.setAttribute("aria-label", "Call from " + (call.caller || call.number));
  }

  function addCall(call) {
    let article = articleFor(call.call_sid);
    if (article === null) {
      article = template.content.firstElementChild.cloneNode(true);
      article.dataset.callSid = call.call_sid;
      const path = "/dashboard/calls/" + encodeURIComponent(call.call_sid);
      article.querySelector("form.hangup").action = path + "/hangup";
      const take = article.querySelector("form.take");
      if (take) take.action = path + "/take";
      article.querySelector(".ended-link").href = path;
      section.prepend(article);
    }
    article.classList.remove("ended");
    article.querySelector(".duration").dataset.started = call.started_at;
    setCaller(article, call);
    article.querySelector(".cost").textContent = "$" + call.cost;
    const transcript = article.querySelector(".transcript");
    transcript.replaceChildren(...call.lines.map(lineItem));
    const tools = article.querySelector(".tools");
    tools.replaceChildren(...call.tools.map(function (label) {
      const item = document.createElement("li");
      item.textContent = label;
      return item;
    }));
    updateEmpty();
    tick();
    return article;
  }

  function endCall(sid) {
    const article = articleFor(sid);
    if (article === null) return;
    article.classList.add("ended");
    article.querySelector(".state").textContent = "ended";
    for (const form of article.querySelectorAll("form.hangup, form.take")) form.remove();
    article.querySelector(".ended-link").hidden = false;
    updateEmpty();
  }

  function tick() {
    const now = Date.now();
    for (const time of section.querySelectorAll("article.call:not(.ended) .duration")) {
      const started = Date.parse(time.dataset.started);
      if (Number.isNaN(started)) continue;
      const seconds = Math.max(0, Math.round((now - started) / 1000));
      time.textContent = Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
    }
  }
  setInterval(tick, 1000);
  tick();

  const handlers = {
    snapshot(data) {
      const live = new Set(data.calls.map(function (call) { return call.call_sid; }));
      for (const article of section.querySelectorAll("article.call:not(.ended)")) {
        if (!live.has(article.dataset.callSid)) endCall(article.dataset.callSid);
      }
      data.calls.forEach(addCall);
    },
    "call-started": addCall,
    "call-updated"(call) {
      const article = articleFor(call.call_sid);
      if (article) setCaller(article, call);
    },
    line(data) {
      const article = articleFor(data.call_sid);
      if (!article) return;
      const transcript = article.querySelector(".transcript");
      const item = lineItem(data);
      const earlier = data.item_id
        ? Array.from(transcript.children).find(function (li) { return li.dataset.itemId === data.item_id; })
        : undefined;
      if (earlier) earlier.replaceWith(item); else transcript.append(item);
      transcript.scrollTop = transcript.scrollHeight;
    },
    tool(data) {
      const article = articleFor(data.call_sid);
      if (!article) return;
      const item = document.createElement("li");
      item.textContent = data.label;
      article.querySelector(".tools").append(item);
    },
    cost(data) {
      const article = articleFor(data.call_sid);
      if (article) article.querySelector(".cost").textContent = "$" + data.cost;
    },
    "call-ended"(data) { endCall(data.call_sid); },
  };

  const after = section.dataset.lastEventId || "";
  const source = new EventSource("/dashboard/events" + (after ? "?after=" + encodeURIComponent(after) : ""));
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, function (event) { handle(JSON.parse(event.data)); });
  }
  source.addEventListener("open", function () {
    status.textContent = "Connected: new calls and what is said appear here as it happens.";
    document.body.dataset.live = "connected";
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      status.textContent = "Disconnected. Reload the page (you may need to log in again).";
      document.body.dataset.live = "closed";
    } else {
      status.textContent = "Reconnecting…";
      document.body.dataset.live = "reconnecting";
    }
  });
})();
