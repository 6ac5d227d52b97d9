// Switchboard's reference agent console (docs/agent-api.md, "Agent
// console"). No framework, no build step. Customer text is untrusted: the
// DOM is built with createElement and textContent only.
(function () {
  "use strict";

  var API = "/api/v1";
  var TOKEN_KEY = "switchboard.agentToken";
  var REFRESH_MS = 10000;
  var PAGE = 500;
  var TYPING_EVERY_MS = 3000;
  var TYPING_IDLE_MS = 5000;
  var VISITOR_TYPING_MS = 10000;
  var SILENT_MS = 60000;
  // How long a websocket ticket request may take before the attempt gives up.
  var TICKET_WAIT_MS = 10000;

  var CHANNELS = { chat: "Chat", email: "Email", social: "Social", voice: "Voice" };
  var WITHDRAWN = {
    declined: "declined",
    expired: "expired",
    revoked: "taken back",
    abandoned: "the customer went away"
  };
  var ATTACHMENT = /^\s*\[attachment: (.*), media id ([A-Za-z0-9._-]{1,512})\]\s*$/;

  var S = {
    token: null,
    me: null,
    connected: false,
    socket: null,
    socketSeen: 0,
    retry: 0,
    retryTimer: null,
    connecting: 0, // the websocket attempt fetching its ticket (0: none)
    attempts: 0,
    offers: new Map(), // contact id -> {id, channel, until, details, el}
    convs: new Map(), // contact id -> conversation
    selected: null,
    ended: null, // the conversation still shown after it ended
    clockSkew: 0, // server time minus local time, ms
    typingSupported: true,
    readSupported: true,
    typingSent: { id: null, at: 0, on: false },
    typingIdle: null,
    draft: null, // {contact, text, id}: the reply being sent, named by id
    timers: []
  };

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] === null || attrs[k] === undefined || attrs[k] === false) return;
        if (k === "className") node.className = attrs[k];
        else node.setAttribute(k, attrs[k] === true ? "" : String(attrs[k]));
      });
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function status(text, isError) {
    var s = $("status");
    s.textContent = text;
    s.classList.toggle("error", !!isError);
  }

  function announce(text) {
    var a = $("announcer");
    a.textContent = "";
    // A fresh text node so screen readers read it again.
    window.setTimeout(function () {
      a.textContent = text;
    }, 50);
  }

  function now() {
    return Date.now() + S.clockSkew;
  }

  function timeOf(ms) {
    if (!ms) return "";
    var d = new Date(ms);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // Stream ids "1795389528425-0", compared as numbers.
  function seqCmp(a, b) {
    var pa = String(a).split("-");
    var pb = String(b).split("-");
    var ma = Number(pa[0]);
    var mb = Number(pb[0]);
    if (ma !== mb) return ma < mb ? -1 : 1;
    var na = Number(pa[1] || 0);
    var nb = Number(pb[1] || 0);
    return na === nb ? 0 : na < nb ? -1 : 1;
  }

  // ---- HTTP ------------------------------------------------------------

  function ApiFailure(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  // `signal` (optional): an AbortSignal that gives up on the request.
  function api(method, path, body, signal) {
    var token = S.token;
    var init = {
      method: method,
      headers: { Authorization: "Bearer " + token },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer"
    };
    if (signal) init.signal = signal;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init).then(function (r) {
      var date = r.headers.get("Date");
      if (date) {
        var skew = Date.parse(date) - Date.now();
        // The Date header has second precision: only correct real skew.
        S.clockSkew = Math.abs(skew) > 2000 ? skew : 0;
      }
      return r.text().then(function (text) {
        var data = null;
        try {
          data = text ? JSON.parse(text) : null;
        } catch (e) {
          data = null;
        }
        if (!r.ok) {
          var err = (data && data.error) || {};
          // Only the token this request carried is refused: an answer to
          // a request of an earlier sign-in does not sign out this one.
          if (r.status === 401 && S.token === token) signedOut("The token is no longer accepted. Sign in again.");
          throw new ApiFailure(r.status, err.code || "http_" + r.status, err.message || r.statusText);
        }
        return data;
      });
    });
  }

  function failed(what) {
    return function (e) {
      if (e instanceof ApiFailure) status(what + ": " + e.code + " (" + e.message + ")", true);
      else status(what + ": the server cannot be reached.", true);
      throw e;
    };
  }

  function quiet() {}

  // ---- Sign in / out ---------------------------------------------------

  function signIn(token) {
    S.token = token;
    status("Signing in…");
    return api("GET", "/me")
      .then(function (me) {
        try {
          window.sessionStorage.setItem(TOKEN_KEY, token);
        } catch (e) {
          /* private mode: keep it in memory only */
        }
        S.me = me;
        $("signin").hidden = true;
        $("workspace").hidden = false;
        $("presence-form").hidden = false;
        $("sign-out").hidden = false;
        $("token").value = "";
        applyMe(me);
        connect();
        startTimers();
      })
      .catch(function (e) {
        S.token = null;
        if (e instanceof ApiFailure && e.status === 401) status("Unknown token.", true);
        else if (e instanceof ApiFailure && e.status === 403)
          status("This console is for agents: that is not an agent token.", true);
        else if (e instanceof ApiFailure) status("Cannot sign in: " + e.code + " (" + e.message + ")", true);
        else status("Cannot sign in: the server cannot be reached.", true);
      });
  }

  function signedOut(why) {
    try {
      window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      /* ignore */
    }
    S.token = null;
    S.me = null;
    S.connected = false;
    S.connecting = 0;
    if (S.retryTimer) window.clearTimeout(S.retryTimer);
    S.retryTimer = null;
    if (S.socket) {
      var sock = S.socket;
      S.socket = null;
      sock.onclose = null;
      sock.close(1000);
    }
    S.timers.forEach(function (t) {
      window.clearInterval(t);
    });
    S.timers = [];
    S.offers.clear();
    S.convs.clear();
    S.selected = null;
    S.ended = null;
    $("signin").hidden = false;
    $("workspace").hidden = true;
    $("presence-form").hidden = true;
    $("sign-out").hidden = true;
    $("agent-name").textContent = "";
    renderOffers();
    renderConversations();
    renderSelected();
    status(why || "Signed out.", !!why);
    $("token").focus();
  }

  // ---- Websocket -------------------------------------------------------

  // The websocket opens with a one-time ticket (POST /ws-ticket), so that
  // the token never goes into a URL, which proxies log. Only a server
  // without tickets (older, 404) gets the token in the URL.
  // `S.connecting` names the attempt in progress (a number, or 0); a
  // sign-out or a newer attempt makes an older one's answer moot.
  function connect() {
    if (!S.token || S.socket || S.connecting) return;
    var token = S.token;
    var attempt = ++S.attempts;
    S.connecting = attempt;
    // A ticket request that hangs (the upstream restarting) gives up, so
    // that reconnecting goes on.
    var abort = typeof AbortController === "function" ? new AbortController() : null;
    var giveUp = abort ? window.setTimeout(function () { abort.abort(); }, TICKET_WAIT_MS) : null;
    function done() {
      if (giveUp) window.clearTimeout(giveUp);
      if (S.connecting !== attempt) return false;
      S.connecting = 0;
      return S.token === token && !S.socket;
    }
    api("POST", "/ws-ticket", undefined, abort ? abort.signal : undefined).then(
      function (t) {
        if (done()) openSocket("ticket=" + encodeURIComponent(t.ticket));
      },
      function (e) {
        if (!done()) return;
        if (e instanceof ApiFailure && e.status === 404) openSocket("access_token=" + encodeURIComponent(token));
        else scheduleReconnect();
      }
    );
  }

  function openSocket(query) {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + window.location.host + API + "/ws?" + query;
    var sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    S.socket = sock;
    S.socketSeen = Date.now();
    sock.onmessage = function (ev) {
      if (sock !== S.socket) return;
      S.socketSeen = Date.now();
      var frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (frame && typeof frame.type === "string") onFrame(frame);
    };
    sock.onclose = function () {
      if (sock !== S.socket) return;
      S.socket = null;
      S.connected = false;
      if (!S.token) return;
      status("Disconnected; reconnecting…", true);
      // Whether the token still works decides between retrying and signing out.
      api("GET", "/me").then(scheduleReconnect, function (e) {
        if (!(e instanceof ApiFailure && e.status === 401)) scheduleReconnect();
      });
    };
  }

  function scheduleReconnect() {
    if (!S.token || S.socket || S.connecting || S.retryTimer) return;
    var delay = Math.min(15000, 500 * Math.pow(2, S.retry)) * (0.75 + Math.random() * 0.5);
    S.retry = Math.min(S.retry + 1, 6);
    S.retryTimer = window.setTimeout(function () {
      S.retryTimer = null;
      connect();
    }, delay);
  }

  function send(frame) {
    if (!S.socket || S.socket.readyState !== WebSocket.OPEN) return false;
    S.socket.send(JSON.stringify(frame));
    return true;
  }

  function onFrame(f) {
    switch (f.type) {
      case "hello":
        if (f.version !== 1) {
          // docs/agent-api.md: a client that does not know the version
          // does not go on. No reconnecting either: a reload fetches the
          // console that matches the server.
          var old = S.socket;
          S.socket = null;
          S.connected = false;
          if (old) old.close();
          status("This console speaks version 1 of the agent API; the server speaks version " +
            String(f.version) + ". Reload the page.", true);
          return;
        }
        S.connected = true;
        S.retry = 0;
        // Another instance may answer now (a rolling upgrade): what the
        // last one refused is tried again, and reads are reported anew
        // (one lost with the old socket would not be).
        S.typingSupported = true;
        S.readSupported = true;
        S.typingSent = { id: null, at: 0, on: false };
        S.convs.forEach(function (c) {
          c.readSent = null;
        });
        applyMe(f.me || {});
        status("Connected as " + agentLabel() + ".");
        // applyMe re-reads every held conversation's transcript, which
        // resynchronises it after a reconnect.
        break;
      case "offer":
        addOffer(f.contact_id, f.channel, f.until);
        break;
      case "offer_withdrawn":
        if (S.offers.has(f.contact_id)) {
          removeOffer(f.contact_id);
          announce("Offer withdrawn: " + (WITHDRAWN[f.reason] || f.reason || "ended") + ".");
        }
        break;
      case "assigned":
        removeOffer(f.contact_id);
        addConversation(f.contact_id, f.channel, true);
        break;
      case "requeued":
        endConversation(f.contact_id, f.reason === "transfer" ? "Transferred." : "Went back to its queue (" + (f.reason || "requeued") + ").");
        break;
      case "closed":
        endConversation(f.contact_id, "Closed" + (f.disposition ? " (" + f.disposition + ")." : "."));
        break;
      case "presence":
        if (S.me) {
          S.me.presence = f.presence;
          S.me.reason = f.reason;
          if (f.loads) S.me.loads = f.loads;
        }
        renderPresence();
        break;
      case "message":
        onMessageFrame(f);
        break;
      case "typing":
        onTypingFrame(f);
        break;
      case "read":
        onReadFrame(f);
        break;
      case "result":
        if (f.ref === "read") {
          // A server without `read` refuses it as a frame it cannot read:
          // stop sending it. Other refusals (the contact just ended) are
          // nothing to show.
          if (!f.ok && f.error && f.error.code === "bad_frame") S.readSupported = false;
        } else if (!f.ok && f.error && f.error.code === "bad_frame" && !f.ref) {
          // Commands sent without a ref are ping and typing: a server
          // without typing refuses it. A server that old (before the
          // refusal named its ref) has no `read` either. Stop both.
          S.typingSupported = false;
          S.readSupported = false;
        } else if (!f.ok && f.error) {
          status("Refused: " + f.error.code + " (" + f.error.message + ")", true);
        }
        break;
      default:
        break; // pong, and frames of later versions
    }
  }

  // ---- Agent and presence ----------------------------------------------

  function agentLabel() {
    if (!S.me) return "";
    return S.me.name && S.me.name !== S.me.id ? S.me.name + " (" + S.me.id + ")" : S.me.id || "";
  }

  function applyMe(me) {
    S.me = me;
    $("agent-name").textContent = agentLabel();
    renderPresence();
    var held = Array.isArray(me.held) ? me.held : [];
    var offered = new Set();
    var assigned = new Set();
    held.forEach(function (h) {
      if (h.state === "offered") {
        offered.add(h.contact_id);
        addOffer(h.contact_id, h.channel, h.offer_until, true);
      } else if (h.state === "assigned") {
        assigned.add(h.contact_id);
        addConversation(h.contact_id, h.channel, false, h.queue);
      }
    });
    Array.from(S.offers.keys()).forEach(function (id) {
      if (!offered.has(id)) removeOffer(id);
    });
    Array.from(S.convs.keys()).forEach(function (id) {
      if (!assigned.has(id)) endConversation(id, "No longer yours.");
    });
  }

  function renderPresence() {
    if (!S.me) return;
    var p = S.me.presence || "offline";
    var select = $("presence");
    if (document.activeElement !== select) select.value = p;
    $("away-reason-box").hidden = select.value !== "away";
    if (p === "away" && document.activeElement !== $("away-reason")) $("away-reason").value = S.me.reason || "";
    var text = p === "wrap_up" ? "Wrap-up" : p.charAt(0).toUpperCase() + p.slice(1);
    if (p === "away" && S.me.reason) text += ": " + S.me.reason;
    var loads = S.me.loads || {};
    var held = Object.keys(CHANNELS)
      .filter(function (k) {
        return loads[k];
      })
      .map(function (k) {
        return CHANNELS[k].toLowerCase() + " " + loads[k];
      });
    if (held.length) text += " · holding " + held.join(", ");
    $("presence-state").textContent = text;
    $("presence-state").setAttribute("data-presence", p);
  }

  function setPresence(presence, reason) {
    api("PUT", "/me/presence", { presence: presence, reason: reason || "" })
      .then(function () {
        if (S.me) {
          S.me.presence = presence;
          S.me.reason = reason || "";
        }
        renderPresence();
        status("Presence: " + presence + ".");
      })
      .catch(failed("Cannot change presence"))
      .catch(quiet);
  }

  // ---- Offers ----------------------------------------------------------

  function addOffer(id, channel, until, quietly) {
    if (!id) return;
    var o = S.offers.get(id);
    if (o) {
      o.until = until || o.until;
      renderOffers();
      return;
    }
    o = { id: id, channel: channel || "", until: Number(until) || 0, details: null };
    S.offers.set(id, o);
    renderOffers();
    if (!quietly) announce("New " + (CHANNELS[o.channel] || o.channel || "contact").toLowerCase() + " offer.");
    api("GET", "/contacts/" + encodeURIComponent(id))
      .then(function (d) {
        if (!S.offers.has(id)) return;
        o.details = d;
        renderOffers();
      })
      .catch(quiet);
  }

  function removeOffer(id) {
    if (S.offers.delete(id)) renderOffers();
  }

  function preview(details) {
    if (!details || !Array.isArray(details.transcript)) return "";
    for (var i = details.transcript.length - 1; i >= 0; i--) {
      var e = details.transcript[i];
      if (e.dir === "in") {
        var text = entryText(e.dir, e.message);
        return text.length > 160 ? text.slice(0, 157) + "…" : text;
      }
    }
    return "";
  }

  function customerOf(details) {
    if (!details) return "";
    return details.customer_name || details.customer || "";
  }

  function renderOffers() {
    var list = $("offers");
    clear(list);
    S.offers.forEach(function (o) {
      var li = el("li", { className: "offer", "data-testid": "offer", "data-contact-id": o.id, "data-channel": o.channel });
      var head = el("p", { className: "offer-head" });
      head.appendChild(el("span", { className: "channel channel-" + o.channel, "data-testid": "offer-channel" }, CHANNELS[o.channel] || o.channel));
      head.appendChild(el("span", { className: "customer", "data-testid": "offer-customer" }, customerOf(o.details) || o.id));
      li.appendChild(head);
      if (o.details && o.details.subject) li.appendChild(el("p", { className: "subject" }, o.details.subject));
      var pv = preview(o.details);
      if (pv) li.appendChild(el("p", { className: "preview", "data-testid": "offer-preview" }, pv));
      var countdown = el("span", { className: "countdown", "data-testid": "offer-countdown", "data-until": o.until });
      li.appendChild(countdown);
      var accept = el("button", { type: "button", className: "accept", "data-testid": "offer-accept", "data-contact-id": o.id }, "Accept");
      var decline = el("button", { type: "button", className: "decline", "data-testid": "offer-decline", "data-contact-id": o.id }, "Decline");
      accept.addEventListener("click", function () {
        answerOffer(o, true);
      });
      decline.addEventListener("click", function () {
        answerOffer(o, false);
      });
      li.appendChild(accept);
      li.appendChild(decline);
      list.appendChild(li);
      o.el = li;
    });
    $("no-offers").hidden = S.offers.size > 0;
    tickCountdowns();
  }

  function tickCountdowns() {
    var t = now();
    S.offers.forEach(function (o) {
      if (!o.el) return;
      var c = o.el.querySelector("[data-testid=offer-countdown]");
      if (!c) return;
      if (!o.until) {
        c.textContent = "";
        return;
      }
      var left = Math.max(0, Math.ceil((o.until - t) / 1000));
      c.textContent = left > 0 ? left + " s left" : "expired";
      c.setAttribute("data-seconds", String(left));
      c.classList.toggle("urgent", left <= 5);
      // The server withdraws expired offers; clean up if that frame was lost.
      if (o.until - t < -5000) removeOffer(o.id);
    });
  }

  function answerOffer(o, yes) {
    var buttons = o.el ? o.el.querySelectorAll("button") : [];
    Array.prototype.forEach.call(buttons, function (b) {
      b.disabled = true;
    });
    api("POST", "/contacts/" + encodeURIComponent(o.id) + (yes ? "/accept" : "/decline"))
      .then(function () {
        removeOffer(o.id);
        if (yes) addConversation(o.id, o.channel, true);
        status(yes ? "Accepted." : "Declined.");
      })
      .catch(function (e) {
        if (e instanceof ApiFailure && e.code === "not_offered") {
          removeOffer(o.id);
          status("That offer has ended.", true);
          return;
        }
        Array.prototype.forEach.call(buttons, function (b) {
          b.disabled = false;
        });
        failed(yes ? "Cannot accept" : "Cannot decline")(e);
      })
      .catch(quiet);
  }

  // ---- Conversations ---------------------------------------------------

  function addConversation(id, channel, fresh, queue) {
    if (!id) return;
    var c = S.convs.get(id);
    if (!c) {
      c = {
        id: id,
        channel: channel || "",
        queue: queue || "",
        details: null,
        entries: new Map(), // seq -> entry
        order: [], // seqs, ascending
        httpSeq: null, // the last seq read over HTTP
        unread: false,
        typing: false,
        typingTimer: null,
        readSent: null, // the newest customer message reported read
        loading: null,
        history: null // the person's earlier contacts, on any channel
      };
      S.convs.set(id, c);
      loadHistory(c);
      if (fresh) announce("New conversation assigned to you.");
    }
    if (fresh && S.selected !== id) c.unread = true;
    if (!S.selected) select(id);
    renderConversations();
    refresh(c);
    return c;
  }

  function loadHistory(c) {
    api("GET", "/contacts/" + encodeURIComponent(c.id) + "/history")
      .then(function (h) {
        c.history = h.previous_contacts || [];
        if (S.selected === c.id) renderHistory(c);
      })
      .catch(quiet);
  }

  function renderHistory(c) {
    var list = $("history");
    clear(list);
    var items = (c && c.history) || [];
    $("history-box").hidden = items.length === 0;
    $("history-title").textContent = "Earlier contacts (" + items.length + ")";
    items.forEach(function (p) {
      var when = p.queued_at ? new Date(p.queued_at).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) : "";
      var parts = [CHANNELS[p.channel] || p.channel, when];
      if (p.subject) parts.push(p.subject);
      if (p.state === "closed") parts.push(p.disposition ? "closed: " + p.disposition : "closed");
      else parts.push(p.state);
      if (p.agent) parts.push("by " + p.agent);
      if (p.rating) parts.push("rated " + p.rating + "/5");
      list.appendChild(el("li", { "data-testid": "history-item", "data-contact-id": p.id }, parts.join(" · ")));
    });
  }

  function endConversation(id, why) {
    var c = S.convs.get(id);
    if (!c) return;
    S.convs.delete(id);
    if (c.typingTimer) window.clearTimeout(c.typingTimer);
    if (S.selected === id) {
      S.selected = null;
      S.ended = c;
      $("conversation-ended").hidden = false;
      $("conversation-ended").textContent = why;
      $("tools").hidden = true;
      $("typing").textContent = "";
    }
    renderConversations();
    announce("Conversation " + (customerOf(c.details) || id) + ": " + why);
  }

  function select(id) {
    var c = S.convs.get(id);
    if (!c) return;
    S.selected = id;
    S.ended = null;
    c.unread = false;
    renderConversations();
    renderSelected();
    refresh(c);
  }

  function renderConversations() {
    var list = $("conversations");
    clear(list);
    S.convs.forEach(function (c) {
      var li = el("li", {
        className: "conv" + (c.id === S.selected ? " selected" : "") + (c.unread ? " unread" : ""),
        "data-testid": "conversation",
        "data-contact-id": c.id,
        "data-channel": c.channel,
        "data-unread": c.unread ? "true" : "false"
      });
      var b = el("button", {
        type: "button",
        "data-testid": "conversation-open",
        "data-contact-id": c.id,
        "aria-current": c.id === S.selected ? "true" : null
      });
      b.appendChild(el("span", { className: "channel channel-" + c.channel, "data-testid": "conversation-channel" }, CHANNELS[c.channel] || c.channel));
      b.appendChild(el("span", { className: "customer", "data-testid": "conversation-customer" }, customerOf(c.details) || c.id));
      if (c.details && c.details.subject) b.appendChild(el("span", { className: "subject" }, c.details.subject));
      if (c.unread) b.appendChild(el("span", { className: "unread-mark", "data-testid": "unread" }, "new"));
      if (c.typing) b.appendChild(el("span", { className: "typing-mark" }, "typing…"));
      b.addEventListener("click", function () {
        select(c.id);
      });
      li.appendChild(b);
      list.appendChild(li);
    });
    $("no-conversations").hidden = S.convs.size > 0;
  }

  function renderSelected() {
    var c = S.selected ? S.convs.get(S.selected) : null;
    var transcript = $("transcript");
    if (!c) {
      if (S.ended) return; // keep showing the conversation that just ended
      $("conversation-title").textContent = "No conversation selected";
      renderHistory(null);
      $("conversation-meta").textContent = "";
      $("conversation-ended").hidden = true;
      $("tools").hidden = true;
      $("typing").textContent = "";
      clear(transcript);
      transcript.removeAttribute("data-contact-id");
      return;
    }
    $("conversation-ended").hidden = true;
    $("tools").hidden = false;
    var d = c.details || {};
    $("conversation-title").textContent = (CHANNELS[c.channel] || c.channel) + " · " + (customerOf(d) || c.id);
    var meta = [];
    if (d.customer && d.customer_name) meta.push(d.customer);
    if (d.subject) meta.push("Subject: " + d.subject);
    if (d.routing && d.routing.queue) meta.push("Queue: " + d.routing.queue);
    else if (c.queue) meta.push("Queue: " + c.queue);
    if (d.source) meta.push("Via: " + d.source + (d.address ? " (" + d.address + ")" : ""));
    if (d.language) meta.push("Language: " + d.language);
    meta.push("Contact " + c.id);
    $("conversation-meta").textContent = meta.join(" · ");
    $("typing").textContent = c.typing ? "The customer is typing…" : "";
    renderHistory(c);
    if (transcript.getAttribute("data-contact-id") !== c.id) {
      clear(transcript);
      transcript.setAttribute("data-contact-id", c.id);
    }
    syncTranscript(c);
  }

  // Adds or updates the entries of the open transcript without rebuilding it.
  function syncTranscript(c) {
    var transcript = $("transcript");
    var stick = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 40;
    var existing = new Map();
    Array.prototype.forEach.call(transcript.children, function (li) {
      existing.set(li.getAttribute("data-seq"), li);
    });
    var prev = null;
    c.order.forEach(function (seq) {
      var e = c.entries.get(seq);
      var li = existing.get(seq);
      if (!li || li.getAttribute("data-version") !== String(e.version)) {
        var fresh = renderEntry(c, e);
        if (li) transcript.replaceChild(fresh, li);
        else if (prev && prev.nextSibling) transcript.insertBefore(fresh, prev.nextSibling);
        else if (!prev) transcript.insertBefore(fresh, transcript.firstChild);
        else transcript.appendChild(fresh);
        li = fresh;
      }
      prev = li;
    });
    if (stick) transcript.scrollTop = transcript.scrollHeight;
    markRead(c);
  }

  // The customer's messages on screen are read: their widget shows them
  // so (chat). Sent for the newest one, once, while the page is visible.
  function markRead(c) {
    // Only a chat widget shows it.
    if (c.channel !== "chat" || !S.readSupported || S.selected !== c.id || document.hidden) return;
    for (var i = c.order.length - 1; i >= 0; i--) {
      var e = c.entries.get(c.order[i]);
      if (e && e.dir === "in") {
        if (c.readSent && seqCmp(e.seq, c.readSent) <= 0) return;
        if (send({ type: "read", ref: "read", contact_id: c.id, seq: e.seq })) c.readSent = e.seq;
        return;
      }
    }
  }

  // ---- Transcript entries ----------------------------------------------

  function entryText(dir, m) {
    if (!m || typeof m !== "object") return typeof m === "string" ? m : "";
    if (dir === "out" && m.message && typeof m.message === "object") return String(m.message.text || "");
    if (dir === "rating") {
      var parts = [];
      if (m.score !== undefined) parts.push("Rating: " + m.score + "/5");
      if (m.comment) parts.push(String(m.comment));
      if (parts.length) return parts.join(" · ");
    }
    if (typeof m.text === "string") return m.text;
    return "";
  }

  function authorOf(c, dir, m) {
    var d = c.details || {};
    switch (dir) {
      case "in":
      case "edit":
        return customerOf(d) || "Customer";
      case "rating":
        return (customerOf(d) || "Customer") + " rated";
      case "out":
        return m && m.author === "switchboard" ? "Automatic reply" : (m && m.author) || "Agent";
      case "note":
        return "Note by " + ((m && m.author) || "agent");
      case "auto":
        return "Automatic answer from the customer's side";
      default:
        return dir;
    }
  }

  function deliveryOf(e) {
    if (e.dir !== "out") return null;
    var d = e.delivery;
    var outcome = d && (d.outcome || d);
    var state = "queued";
    var reason = "";
    if (outcome && outcome.state === "delivered") state = "delivered";
    else if (outcome && outcome.state === "failed") {
      state = "failed";
      reason = outcome.reason || "";
    }
    var receipt = e.status && e.status.status ? String(e.status.status) : "";
    if (receipt === "failed" && state !== "failed") {
      state = "failed";
      reason = (e.status.detail && String(e.status.detail)) || "the provider reported a failure";
    }
    return { state: state, reason: reason, receipt: receipt };
  }

  function renderEntry(c, e) {
    var li = el("li", {
      className: "entry dir-" + e.dir,
      "data-testid": "entry",
      "data-seq": e.seq,
      "data-dir": e.dir,
      "data-version": e.version
    });
    var head = el("p", { className: "entry-head" });
    head.appendChild(el("span", { className: "author" }, authorOf(c, e.dir, e.message)));
    if (e.at) head.appendChild(el("time", { className: "at", datetime: new Date(e.at).toISOString() }, timeOf(e.at)));
    if (e.dir === "edit") head.appendChild(el("span", { className: "tag" }, "edited an earlier message"));
    if (e.dir === "auto") head.appendChild(el("span", { className: "tag" }, "auto-reply"));
    li.appendChild(head);
    if (e.dir === "in" && e.message && e.message.subject && e.message.subject !== (c.details || {}).subject) {
      li.appendChild(el("p", { className: "entry-subject" }, "Subject: " + e.message.subject));
    }
    var body = el("div", { className: "entry-text", "data-testid": "entry-text" });
    var lines = String(e.text).split("\n");
    var buffer = [];
    function flush() {
      if (!buffer.length) return;
      body.appendChild(el("p", null, buffer.join("\n")));
      buffer = [];
    }
    // A link only for what the message really brought (its `media`; a
    // message stored before that list existed: its attachment lines). A
    // line a customer typed stays text.
    var media = e.dir === "in" && e.message ? e.message.media : null;
    function brought(id) {
      if (e.dir !== "in") return false;
      if (!Array.isArray(media)) return true;
      return media.indexOf(id) >= 0;
    }
    lines.forEach(function (line) {
      var m = ATTACHMENT.exec(line);
      if (m && brought(m[2])) {
        flush();
        body.appendChild(attachmentLink(c.id, m[1], m[2]));
      } else {
        buffer.push(line);
      }
    });
    flush();
    li.appendChild(body);
    var del = deliveryOf(e);
    if (del) {
      var text = del.state === "failed" ? "failed" + (del.reason ? ": " + del.reason : "") : del.state;
      if (del.receipt && del.receipt !== "failed" && del.receipt !== del.state) text += " · " + del.receipt;
      else if (e.read && del.state !== "failed") text += " · read";
      li.appendChild(el("p", { className: "delivery delivery-" + del.state, "data-testid": "delivery", "data-state": del.state }, text));
    }
    return li;
  }

  function attachmentLink(contactId, description, mediaId) {
    var p = el("p", { className: "attachment" });
    var b = el(
      "button",
      { type: "button", className: "link", "data-testid": "attachment-link", "data-media-id": mediaId },
      "Download attachment: " + description
    );
    b.addEventListener("click", function () {
      download(contactId, mediaId, b);
    });
    p.appendChild(b);
    return p;
  }

  // Fetched with the bearer token and handed to the browser as a blob: the
  // token never appears in a URL.
  function download(contactId, mediaId, button) {
    button.disabled = true;
    status("Downloading " + mediaId + "…");
    fetch(API + "/contacts/" + encodeURIComponent(contactId) + "/media/" + encodeURIComponent(mediaId), {
      headers: { Authorization: "Bearer " + S.token },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer"
    })
      .then(function (r) {
        if (!r.ok) {
          return r
            .json()
            .catch(function () {
              return {};
            })
            .then(function (j) {
              var err = (j && j.error) || {};
              throw new ApiFailure(r.status, err.code || "http_" + r.status, err.message || r.statusText);
            });
        }
        return r.blob();
      })
      .then(function (blob) {
        // An octet stream, so the browser saves it rather than showing it.
        var url = URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" }));
        var a = el("a", { href: url, download: mediaId, hidden: true });
        document.body.appendChild(a);
        a.click();
        document.body.removeChild(a);
        window.setTimeout(function () {
          URL.revokeObjectURL(url);
        }, 60000);
        status("Downloaded " + mediaId + ".");
      })
      .catch(failed("Cannot download the attachment"))
      .catch(quiet)
      .then(function () {
        button.disabled = false;
      });
  }

  // Merges entries; returns how many customer entries were new.
  function merge(c, list, fromHttp) {
    var news = 0;
    var added = false;
    list.forEach(function (raw) {
      if (!raw || !raw.seq) return;
      var old = c.entries.get(raw.seq);
      if (old && (old.fromHttp || !fromHttp)) {
        // A later read of the same entry: only its delivery state changes.
        if (fromHttp && (JSON.stringify(old.delivery) !== JSON.stringify(raw.delivery) || JSON.stringify(old.status) !== JSON.stringify(raw.status))) {
          old.delivery = raw.delivery || null;
          old.status = raw.status || null;
          old.version += 1;
        }
        return;
      }
      var e = {
        seq: String(raw.seq),
        dir: String(raw.dir || ""),
        at: Number(raw.at) || 0,
        message: raw.message || null,
        text: fromHttp ? entryText(raw.dir, raw.message) : String(raw.text || ""),
        delivery: raw.delivery || null,
        status: raw.status || null,
        fromHttp: fromHttp,
        read: !!(old && old.read) || (String(raw.dir) === "out" && !!c.readSeq && seqCmp(raw.seq, c.readSeq) <= 0),
        version: old ? old.version + 1 : 1
      };
      c.entries.set(e.seq, e);
      if (!old) {
        c.order.push(e.seq);
        added = true;
        if (e.dir === "in" || e.dir === "rating") news += 1;
      }
    });
    if (added) c.order.sort(seqCmp);
    return news;
  }

  function afterNews(c, news, who) {
    if (!news) return;
    var visible = S.selected === c.id && !document.hidden;
    if (!visible) {
      c.unread = true;
      renderConversations();
    }
    if (S.selected !== c.id || document.hidden) announce("New message from " + (who || customerOf(c.details) || "a customer") + ".");
  }

  // Where the next HTTP read starts: after the last entry read over HTTP,
  // or earlier when a recent reply still waits for its delivery state.
  function readFrom(c) {
    var from = c.httpSeq;
    if (from === null) return "-";
    var start = Math.max(0, c.order.length - 100);
    for (var i = start; i < c.order.length; i++) {
      var e = c.entries.get(c.order[i]);
      var d = deliveryOf(e);
      if (d && d.state === "queued" && now() - e.at < 15 * 60000) {
        var before = i > 0 ? c.order[i - 1] : "-";
        if (before === "-" || seqCmp(before, from) < 0) from = before;
        break;
      }
    }
    return from;
  }

  function refresh(c) {
    if (!S.token) return Promise.resolve();
    if (c.loading) {
      c.again = true;
      return c.loading;
    }
    var pages = 0;
    var first = c.httpSeq === null;
    var news = 0;
    function page(after) {
      var q = after === "-" ? "" : "?after=" + encodeURIComponent(after);
      return api("GET", "/contacts/" + encodeURIComponent(c.id) + q).then(function (d) {
        if (!S.convs.has(c.id)) return null;
        var transcript = Array.isArray(d.transcript) ? d.transcript : [];
        delete d.transcript;
        c.details = d;
        if (d.channel) c.channel = d.channel;
        news += merge(c, transcript, true);
        if (transcript.length) {
          var last = transcript[transcript.length - 1].seq;
          if (c.httpSeq === null || seqCmp(last, c.httpSeq) > 0) c.httpSeq = last;
        } else if (c.httpSeq === null) {
          c.httpSeq = "-";
        }
        pages += 1;
        var more = d.more === undefined ? transcript.length >= PAGE : d.more === true;
        if (more && transcript.length && pages < 40) return page(transcript[transcript.length - 1].seq);
        return null;
      });
    }
    c.loading = page(readFrom(c))
      .then(function () {
        if (!S.convs.has(c.id)) return;
        if (!first) afterNews(c, news);
        renderConversations();
        if (S.selected === c.id) renderSelected();
      })
      .catch(function (e) {
        if (e instanceof ApiFailure && (e.status === 403 || e.status === 404)) {
          endConversation(c.id, "No longer yours.");
        }
      })
      .then(function () {
        c.loading = null;
        if (c.again) {
          c.again = false;
          refresh(c);
        }
      });
    return c.loading;
  }

  function onMessageFrame(f) {
    var c = S.convs.get(f.contact_id);
    if (!c) return;
    // The media a customer's message brought, for its attachment links.
    var message = Array.isArray(f.media) ? { media: f.media } : null;
    var news = merge(c, [{ seq: f.seq, dir: f.dir, text: f.text, at: f.at, message: message }], false);
    if (f.dir === "in") setVisitorTyping(c, false);
    afterNews(c, news);
    if (S.selected === c.id) syncTranscript(c);
  }

  function onTypingFrame(f) {
    var c = S.convs.get(f.contact_id);
    if (c) setVisitorTyping(c, !!f.on);
  }

  // The customer has read our replies up to `seq` (chat).
  function onReadFrame(f) {
    var c = S.convs.get(f.contact_id);
    if (!c || !f.seq) return;
    if (c.readSeq && seqCmp(f.seq, c.readSeq) <= 0) return;
    c.readSeq = String(f.seq);
    c.entries.forEach(function (e) {
      if (e.dir === "out" && !e.read && seqCmp(e.seq, c.readSeq) <= 0) {
        e.read = true;
        e.version += 1;
      }
    });
    if (S.selected === c.id) syncTranscript(c);
  }

  function setVisitorTyping(c, on) {
    if (c.typingTimer) window.clearTimeout(c.typingTimer);
    c.typingTimer = null;
    if (c.typing !== on) {
      c.typing = on;
      renderConversations();
    }
    if (on) {
      c.typingTimer = window.setTimeout(function () {
        setVisitorTyping(c, false);
      }, VISITOR_TYPING_MS);
    }
    if (S.selected === c.id) $("typing").textContent = on ? "The customer is typing…" : "";
  }

  // ---- Agent actions ---------------------------------------------------

  function current() {
    var c = S.selected ? S.convs.get(S.selected) : null;
    if (!c) status("Select a conversation first.", true);
    return c;
  }

  function typing(on) {
    var c = S.selected ? S.convs.get(S.selected) : null;
    // Only a chat widget shows it.
    if (!c || c.channel !== "chat" || !S.typingSupported) return;
    var t = Date.now();
    var last = S.typingSent;
    if (on) {
      if (last.on && last.id === c.id && t - last.at < TYPING_EVERY_MS) return;
      if (last.on && last.id !== c.id) send({ type: "typing", contact_id: last.id, on: false });
      if (send({ type: "typing", contact_id: c.id, on: true })) S.typingSent = { id: c.id, at: t, on: true };
      if (S.typingIdle) window.clearTimeout(S.typingIdle);
      S.typingIdle = window.setTimeout(function () {
        typing(false);
      }, TYPING_IDLE_MS);
    } else if (last.on) {
      if (S.typingIdle) window.clearTimeout(S.typingIdle);
      S.typingIdle = null;
      send({ type: "typing", contact_id: last.id, on: false });
      S.typingSent = { id: last.id, at: t, on: false };
    }
  }

  function sendReply() {
    var c = current();
    if (!c) return;
    var box = $("reply");
    var text = box.value;
    if (!text.trim()) return;
    typing(false);
    box.disabled = true;
    // The reply's name: sending the same text again after a failure
    // reuses it, so a reply that was queued before its answer was lost is
    // not sent twice (docs/agent-api.md, client_id).
    var d = S.draft;
    if (!d || d.contact !== c.id || d.text !== text) {
      var bytes = new Uint8Array(12);
      crypto.getRandomValues(bytes);
      var hex = Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
      d = S.draft = { contact: c.id, text: text, id: "console-" + hex };
    }
    api("POST", "/contacts/" + encodeURIComponent(c.id) + "/messages", { text: text, client_id: d.id })
      .then(function (r) {
        S.draft = null;
        box.value = "";
        merge(c, [{ seq: r.seq, dir: "out", at: now(), message: { author: S.me && S.me.id, message: { text: text } } }], true);
        // The reply is ours; a later read fills in its delivery state.
        var e = c.entries.get(String(r.seq));
        if (e) e.fromHttp = false;
        if (S.selected === c.id) syncTranscript(c);
        status("Reply queued.");
      })
      .catch(failed("Cannot send the reply"))
      .catch(quiet)
      .then(function () {
        box.disabled = false;
        box.focus();
      });
  }

  function addNote() {
    var c = current();
    if (!c) return;
    var box = $("note");
    var text = box.value;
    if (!text.trim()) return;
    api("POST", "/contacts/" + encodeURIComponent(c.id) + "/notes", { text: text })
      .then(function (r) {
        box.value = "";
        merge(c, [{ seq: r.seq, dir: "note", at: now(), message: { author: S.me && S.me.id, text: text } }], true);
        var e = c.entries.get(String(r.seq));
        if (e) e.fromHttp = false;
        if (S.selected === c.id) syncTranscript(c);
        status("Note added.");
      })
      .catch(failed("Cannot add the note"))
      .catch(quiet);
  }

  function transfer() {
    var c = current();
    if (!c) return;
    var queue = $("transfer-queue").value.trim();
    var agent = $("transfer-agent").value.trim();
    if (!queue && !agent) {
      status("Name a queue or an agent to transfer to.", true);
      return;
    }
    var body = {};
    if (queue) body.queue = queue;
    if (agent) body.agent = agent;
    api("POST", "/contacts/" + encodeURIComponent(c.id) + "/transfer", body)
      .then(function () {
        $("transfer-queue").value = "";
        $("transfer-agent").value = "";
        endConversation(c.id, "Transferred to " + [agent, queue].filter(Boolean).join(" / ") + ".");
        status("Transferred.");
      })
      .catch(failed("Cannot transfer"))
      .catch(quiet);
  }

  function closeConversation() {
    var c = current();
    if (!c) return;
    var disposition = $("disposition-text").value.trim() || $("disposition").value;
    api("POST", "/contacts/" + encodeURIComponent(c.id) + "/close", { disposition: disposition })
      .then(function () {
        $("disposition-text").value = "";
        endConversation(c.id, "Closed (" + disposition + ").");
        status("Closed.");
      })
      .catch(failed("Cannot close"))
      .catch(quiet);
  }

  // ---- Timers ----------------------------------------------------------

  function startTimers() {
    S.timers.forEach(function (t) {
      window.clearInterval(t);
    });
    S.timers = [
      window.setInterval(tickCountdowns, 250),
      // The safety net: new entries and delivery states even without frames.
      window.setInterval(function () {
        S.convs.forEach(function (c) {
          refresh(c);
        });
      }, REFRESH_MS),
      window.setInterval(function () {
        if (!S.socket) return;
        if (Date.now() - S.socketSeen > SILENT_MS) {
          var sock = S.socket;
          S.socket = null;
          S.connected = false;
          sock.onclose = null;
          try {
            sock.close();
          } catch (e) {
            /* ignore */
          }
          status("The connection went silent; reconnecting…", true);
          scheduleReconnect();
        } else {
          send({ type: "ping" });
        }
      }, 20000)
    ];
  }

  // ---- Wiring ----------------------------------------------------------

  function wire() {
    $("signin-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("sign-out").addEventListener("click", function () {
      signedOut();
    });
    $("presence").addEventListener("change", function () {
      var p = $("presence").value;
      $("away-reason-box").hidden = p !== "away";
      setPresence(p, p === "away" ? $("away-reason").value.trim() : "");
    });
    $("presence-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      setPresence("away", $("away-reason").value.trim());
    });
    $("reply-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      sendReply();
    });
    $("reply").addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        sendReply();
      }
    });
    $("reply").addEventListener("input", function () {
      typing($("reply").value.length > 0);
    });
    $("note-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      addNote();
    });
    $("transfer-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      transfer();
    });
    $("close-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      closeConversation();
    });
    document.addEventListener("visibilitychange", function () {
      var c = S.selected ? S.convs.get(S.selected) : null;
      if (!document.hidden && c && c.unread) {
        c.unread = false;
        renderConversations();
      }
      if (c) markRead(c);
    });

    var saved = null;
    try {
      saved = window.sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {
      saved = null;
    }
    if (saved) signIn(saved);
    else $("token").focus();
  }

  window.SwitchboardConsole = {
    state: function () {
      return {
        connected: S.connected,
        agent: S.me ? S.me.id || null : null,
        offers: Array.from(S.offers.keys()),
        conversations: Array.from(S.convs.keys()),
        selected: S.selected
      };
    }
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
