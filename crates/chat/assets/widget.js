/* Switchboard chat widget: protocol v1 (docs/widget-protocol.md). Plain ES2019,
 * no dependencies, no build step. Embed with
 *   <script src="https://HOST/channels/NAME/widget.js" data-widget="ID" async></script>
 * Server and user text is only ever put into the page with textContent. */
(function () {
  'use strict';
  if (window.SwitchboardWidget) return;
  var script = document.currentScript ||
    document.querySelector('script[src*="/widget.js"][data-widget]');
  if (!script || !script.src) return;
  var SRC = new URL(script.src, location.href);
  var PATH = /^(.*)\/channels\/([^/]+)\/widget\.js$/.exec(SRC.pathname);
  var WIDGET = script.getAttribute('data-widget');
  if (!PATH || !WIDGET) {
    console.error('Switchboard widget: src must end in /channels/{name}/widget.js and data-widget is required');
    return;
  }
  var CHANNEL_URL = SRC.origin + PATH[1] + '/channels/' + PATH[2];
  var WS_URL = CHANNEL_URL.replace(/^http/, 'ws') + '/ws?widget=' + encodeURIComponent(WIDGET);
  var KEY = 'switchboard:' + PATH[2] + ':' + WIDGET;
  var MAX_FRAME = 16000; // the server's default max_frame_bytes is 16 KiB; welcome says
  var MAX_TEXT = 4000;

  /* ---------- translations ---------- */
  var T = {
    en: {
      title: 'Chat with us', open: 'Open chat', openNew: 'Open chat (new messages)', close: 'Close chat',
      messages: 'Conversation', you: 'You', agent: 'Agent', placeholder: 'Type a message…', inputLabel: 'Message',
      send: 'Send', attach: 'Attach a file', uploading: 'Uploading {file}…',
      queue: 'You are number {n} in the queue', wait: 'Estimated wait: about {m} min',
      joined: '{name} joined', left: '{name} left', typing: '{name} is typing…', ended: 'The conversation has ended',
      rateTitle: 'How did we do?', star: '{n} out of 5: {word}',
      r1: 'Very poor', r2: 'Poor', r3: 'Okay', r4: 'Good', r5: 'Excellent',
      comment: 'Comment (optional)', submit: 'Submit', thanks: 'Thank you!',
      prechatIntro: 'Before we start, please tell us a little about yourself.',
      name: 'Name', email: 'Email', topic: 'Topic', start: 'Start chat',
      offlineIntro: 'No one is available right now. Leave a message and we will answer by email.',
      message: 'Message', offlineThanks: 'Thank you! We will answer you by email.',
      connecting: 'Connecting…', reconnecting: 'Reconnecting…', sending: 'Sending…', sent: 'Sent', read: 'Read',
      retrying: 'Not sent — retrying', failed: 'Not sent', attachment: 'Attachment', dismiss: 'Dismiss',
      e_bad_frame: 'Something went wrong. Please try again.',
      e_bad_session: 'Your session has expired. Starting a new one…',
      e_unsupported_version: 'This chat needs an update. Please reload the page.',
      e_too_long: 'The message is too long.',
      e_bad_client_id: 'The message could not be sent.',
      e_rate_limited: 'You are sending messages too fast. Please wait a moment.',
      e_unavailable: 'The service is temporarily unavailable. We will try again.',
      e_not_closed: 'You can rate the conversation once it has ended.',
      e_bad_rating: 'Please choose a rating from 1 to 5.',
      e_bad_email: 'Please enter a valid email address.',
      e_unknown_attachment: 'The attachment could not be found. Please attach it again.',
      e_upload_413: 'The file is too large.', e_upload_415: 'This type of file is not allowed.',
      e_upload_failed: 'The file could not be uploaded.',
      e_no_offline_form: 'Messages cannot be left here right now.',
      e_offline_limit: 'You have already left us messages. We will answer by email.'
    },
    uk: {
      title: 'Напишіть нам', open: 'Відкрити чат', openNew: 'Відкрити чат (нові повідомлення)', close: 'Закрити чат',
      messages: 'Розмова', you: 'Ви', agent: 'Оператор', placeholder: 'Введіть повідомлення…', inputLabel: 'Повідомлення',
      send: 'Надіслати', attach: 'Прикріпити файл', uploading: 'Завантаження {file}…',
      queue: 'Ваш номер у черзі: {n}', wait: 'Орієнтовне очікування: близько {m} хв',
      joined: '{name} тепер у чаті', left: '{name} більше не в чаті', typing: '{name} друкує…', ended: 'Розмову завершено',
      rateTitle: 'Як ми впоралися?', star: '{n} з 5: {word}',
      r1: 'Дуже погано', r2: 'Погано', r3: 'Нормально', r4: 'Добре', r5: 'Чудово',
      comment: 'Коментар (необов’язково)', submit: 'Надіслати', thanks: 'Дякуємо!',
      prechatIntro: 'Перш ніж почати, розкажіть трохи про себе.',
      name: 'Ім’я', email: 'Електронна пошта', topic: 'Тема', start: 'Почати чат',
      offlineIntro: 'Зараз ніхто не може відповісти. Залиште повідомлення, і ми відповімо електронною поштою.',
      message: 'Повідомлення', offlineThanks: 'Дякуємо! Ми відповімо вам електронною поштою.',
      connecting: 'З’єднання…', reconnecting: 'Відновлення з’єднання…', sending: 'Надсилання…', sent: 'Надіслано', read: 'Прочитано',
      retrying: 'Не надіслано — повторюємо спробу', failed: 'Не надіслано', attachment: 'Вкладення', dismiss: 'Закрити',
      e_bad_frame: 'Щось пішло не так. Спробуйте ще раз.',
      e_bad_session: 'Ваш сеанс завершився. Починаємо новий…',
      e_unsupported_version: 'Чат потребує оновлення. Перезавантажте сторінку.',
      e_too_long: 'Повідомлення задовге.',
      e_bad_client_id: 'Не вдалося надіслати повідомлення.',
      e_rate_limited: 'Ви надсилаєте повідомлення надто швидко. Зачекайте трохи.',
      e_unavailable: 'Сервіс тимчасово недоступний. Ми спробуємо ще раз.',
      e_not_closed: 'Оцінити розмову можна після її завершення.',
      e_bad_rating: 'Оберіть оцінку від 1 до 5.',
      e_bad_email: 'Введіть дійсну адресу електронної пошти.',
      e_unknown_attachment: 'Вкладення не знайдено. Прикріпіть його ще раз.',
      e_upload_413: 'Файл завеликий.', e_upload_415: 'Файли такого типу не дозволені.',
      e_upload_failed: 'Не вдалося завантажити файл.',
      e_no_offline_form: 'Зараз тут не можна залишити повідомлення.',
      e_offline_limit: 'Ви вже залишили нам повідомлення. Ми відповімо електронною поштою.'
    },
    ru: {
      title: 'Напишите нам', open: 'Открыть чат', openNew: 'Открыть чат (новые сообщения)', close: 'Закрыть чат',
      messages: 'Разговор', you: 'Вы', agent: 'Оператор', placeholder: 'Введите сообщение…', inputLabel: 'Сообщение',
      send: 'Отправить', attach: 'Прикрепить файл', uploading: 'Загрузка {file}…',
      queue: 'Ваш номер в очереди: {n}', wait: 'Примерное ожидание: около {m} мин',
      joined: '{name} теперь в чате', left: '{name} больше не в чате', typing: '{name} печатает…', ended: 'Разговор завершён',
      rateTitle: 'Как мы справились?', star: '{n} из 5: {word}',
      r1: 'Очень плохо', r2: 'Плохо', r3: 'Нормально', r4: 'Хорошо', r5: 'Отлично',
      comment: 'Комментарий (необязательно)', submit: 'Отправить', thanks: 'Спасибо!',
      prechatIntro: 'Прежде чем начать, расскажите немного о себе.',
      name: 'Имя', email: 'Электронная почта', topic: 'Тема', start: 'Начать чат',
      offlineIntro: 'Сейчас никто не может ответить. Оставьте сообщение, и мы ответим по электронной почте.',
      message: 'Сообщение', offlineThanks: 'Спасибо! Мы ответим вам по электронной почте.',
      connecting: 'Подключение…', reconnecting: 'Переподключение…', sending: 'Отправка…', sent: 'Отправлено', read: 'Прочитано',
      retrying: 'Не отправлено — повторяем попытку', failed: 'Не отправлено', attachment: 'Вложение', dismiss: 'Закрыть',
      e_bad_frame: 'Что-то пошло не так. Попробуйте ещё раз.',
      e_bad_session: 'Ваш сеанс истёк. Начинаем новый…',
      e_unsupported_version: 'Чату требуется обновление. Перезагрузите страницу.',
      e_too_long: 'Сообщение слишком длинное.',
      e_bad_client_id: 'Не удалось отправить сообщение.',
      e_rate_limited: 'Вы отправляете сообщения слишком быстро. Подождите немного.',
      e_unavailable: 'Сервис временно недоступен. Мы попробуем ещё раз.',
      e_not_closed: 'Оценить разговор можно после его завершения.',
      e_bad_rating: 'Выберите оценку от 1 до 5.',
      e_bad_email: 'Введите действительный адрес электронной почты.',
      e_unknown_attachment: 'Вложение не найдено. Прикрепите его ещё раз.',
      e_upload_413: 'Файл слишком большой.', e_upload_415: 'Файлы такого типа не разрешены.',
      e_upload_failed: 'Не удалось загрузить файл.',
      e_no_offline_form: 'Сейчас здесь нельзя оставить сообщение.',
      e_offline_limit: 'Вы уже оставили нам сообщения. Мы ответим по электронной почте.'
    },
    pl: {
      title: 'Porozmawiaj z nami', open: 'Otwórz czat', openNew: 'Otwórz czat (nowe wiadomości)', close: 'Zamknij czat',
      messages: 'Rozmowa', you: 'Ty', agent: 'Konsultant', placeholder: 'Wpisz wiadomość…', inputLabel: 'Wiadomość',
      send: 'Wyślij', attach: 'Załącz plik', uploading: 'Przesyłanie {file}…',
      queue: 'Twoje miejsce w kolejce: {n}', wait: 'Szacowany czas oczekiwania: około {m} min',
      joined: '{name} dołącza do rozmowy', left: '{name} opuszcza rozmowę', typing: '{name} pisze…', ended: 'Rozmowa została zakończona',
      rateTitle: 'Jak nam poszło?', star: '{n} z 5: {word}',
      r1: 'Bardzo źle', r2: 'Źle', r3: 'Przeciętnie', r4: 'Dobrze', r5: 'Znakomicie',
      comment: 'Komentarz (opcjonalnie)', submit: 'Wyślij', thanks: 'Dziękujemy!',
      prechatIntro: 'Zanim zaczniemy, powiedz nam coś o sobie.',
      name: 'Imię', email: 'E-mail', topic: 'Temat', start: 'Rozpocznij czat',
      offlineIntro: 'Nikt nie jest teraz dostępny. Zostaw wiadomość, a odpowiemy e-mailem.',
      message: 'Wiadomość', offlineThanks: 'Dziękujemy! Odpowiemy e-mailem.',
      connecting: 'Łączenie…', reconnecting: 'Ponowne łączenie…', sending: 'Wysyłanie…', sent: 'Wysłano', read: 'Przeczytano',
      retrying: 'Nie wysłano — ponawiamy próbę', failed: 'Nie wysłano', attachment: 'Załącznik', dismiss: 'Zamknij',
      e_bad_frame: 'Coś poszło nie tak. Spróbuj ponownie.',
      e_bad_session: 'Twoja sesja wygasła. Rozpoczynamy nową…',
      e_unsupported_version: 'Czat wymaga aktualizacji. Odśwież stronę.',
      e_too_long: 'Wiadomość jest za długa.',
      e_bad_client_id: 'Nie udało się wysłać wiadomości.',
      e_rate_limited: 'Wysyłasz wiadomości zbyt szybko. Poczekaj chwilę.',
      e_unavailable: 'Usługa jest chwilowo niedostępna. Spróbujemy ponownie.',
      e_not_closed: 'Rozmowę można ocenić dopiero po jej zakończeniu.',
      e_bad_rating: 'Wybierz ocenę od 1 do 5.',
      e_bad_email: 'Podaj prawidłowy adres e-mail.',
      e_unknown_attachment: 'Nie znaleziono załącznika. Załącz go ponownie.',
      e_upload_413: 'Plik jest za duży.', e_upload_415: 'Ten typ pliku jest niedozwolony.',
      e_upload_failed: 'Nie udało się przesłać pliku.',
      e_no_offline_form: 'Teraz nie można tu zostawić wiadomości.',
      e_offline_limit: 'Wiadomości zostały już wysłane. Odpowiemy e-mailem.'
    },
    zh: {
      title: '与我们聊天', open: '打开聊天', openNew: '打开聊天（有新消息）', close: '关闭聊天',
      messages: '对话', you: '您', agent: '客服', placeholder: '输入消息…', inputLabel: '消息',
      send: '发送', attach: '添加附件', uploading: '正在上传 {file}…',
      queue: '您在队列中排第 {n} 位', wait: '预计等待约 {m} 分钟',
      joined: '{name} 已加入', left: '{name} 已离开', typing: '{name} 正在输入…', ended: '对话已结束',
      rateTitle: '您对我们的服务满意吗？', star: '{n} 星（满分 5 星）：{word}',
      r1: '非常差', r2: '差', r3: '一般', r4: '好', r5: '非常好',
      comment: '评论（可选）', submit: '提交', thanks: '谢谢！',
      prechatIntro: '开始之前，请简单介绍一下您自己。',
      name: '姓名', email: '电子邮箱', topic: '主题', start: '开始聊天',
      offlineIntro: '目前没有人可以接待您。请留言，我们会通过电子邮件回复您。',
      message: '留言', offlineThanks: '谢谢！我们会通过电子邮件回复您。',
      connecting: '正在连接…', reconnecting: '正在重新连接…', sending: '正在发送…', sent: '已发送', read: '已读',
      retrying: '未发送 — 正在重试', failed: '未发送', attachment: '附件', dismiss: '关闭',
      e_bad_frame: '出了点问题，请重试。',
      e_bad_session: '您的会话已过期，正在开始新的会话…',
      e_unsupported_version: '聊天需要更新，请刷新页面。',
      e_too_long: '消息太长。',
      e_bad_client_id: '消息无法发送。',
      e_rate_limited: '您发送消息过于频繁，请稍候。',
      e_unavailable: '服务暂时不可用，我们会稍后重试。',
      e_not_closed: '对话结束后才能评分。',
      e_bad_rating: '请选择 1 到 5 的评分。',
      e_bad_email: '请输入有效的电子邮箱地址。',
      e_unknown_attachment: '找不到附件，请重新添加。',
      e_upload_413: '文件太大。', e_upload_415: '不允许上传此类型的文件。',
      e_upload_failed: '文件上传失败。',
      e_no_offline_form: '目前无法在此留言。',
      e_offline_limit: '您已给我们留言，我们会通过电子邮件回复。'
    }
  };
  var LOCALE = (function () {
    var c = [script.getAttribute('data-locale'), document.documentElement.lang]
      .concat(navigator.languages || [], navigator.language);
    for (var i = 0; i < c.length; i++) {
      var p = c[i] && String(c[i]).toLowerCase().split(/[-_]/)[0];
      if (p && T[p]) return p;
    }
    return 'en';
  })();
  function t(key, vars) {
    var s = T[LOCALE][key] || T.en[key] || key;
    return s.replace(/\{(\w+)\}/g, function (_, k) { return vars && vars[k] != null ? String(vars[k]) : ''; });
  }

  /* ---------- persistent state (per channel and widget) ---------- */
  function stored() {
    var v = null;
    try { v = JSON.parse(localStorage.getItem(KEY)); } catch (e) { /* blocked or corrupt */ }
    return v && typeof v === 'object' ? v : {};
  }
  function load() {
    var v = stored();
    return {
      token: typeof v.token === 'string' ? v.token : null,
      visitor: typeof v.visitor === 'string' ? v.visitor : null,
      conversation: v.conversation || null,
      lastSeq: v.lastSeq || null,
      outbox: Array.isArray(v.outbox) ? v.outbox : [],
      history: Array.isArray(v.history) ? v.history : [],
      prechatDone: !!v.prechatDone,
      prechat: prechatFrame(v.prechat), // the answers, sent again after a reconnect
      rate: typeof v.rate === 'string' ? v.rate : !!v.rate, // the closed conversation to rate
      agent: v.agent || null
    };
  }
  function prechatFrame(v) {
    if (!v || typeof v !== 'object') return null;
    var f = { type: 'prechat' };
    ['name', 'email', 'topic'].forEach(function (k) { if (typeof v[k] === 'string' && v[k]) f[k] = v[k]; });
    return f;
  }
  var S = load();
  // Conversations seen closed (on this page, or before a reload while
  // still to be rated): messages of theirs arriving late do not make them
  // the current one again.
  var ended = new Set(typeof S.rate === 'string' ? [S.rate] : []);
  // Every message this tab has had in its outbox: one another tab of the
  // same visitor queued (and may have closed with) is taken over once.
  var known = new Set(S.outbox.map(function (o) { return o && o.client_id; }));
  // Messages sent on this socket and not refused since: flush() sends each
  // once per socket (it sent every unacknowledged one at every call, so ten
  // quick messages while the server was slow made 55 frames).
  var sentOn = new Set();
  // Takes over the messages another tab of this visitor left in storage
  // that this tab never had, once they have waited ADOPT_AFTER there (the
  // tab that wrote one sends it meanwhile, if it still can: taken over at
  // once, every open tab sent every message); true when there were any.
  // (Tabs share one storage key and each wrote its own copy: the last one
  // to save dropped the others' queued messages.) One taken over that has
  // left storage since was settled by another tab: dropped here too.
  var ADOPT_AFTER = 10000, adopted = new Set(), adoptTimer = null;
  function adoptOutbox() {
    var v = stored(), added = false, now = Date.now(), young = false;
    if (!Array.isArray(v.outbox) || !S.visitor || v.visitor !== S.visitor) return false;
    var there = new Set();
    v.outbox.forEach(function (o) {
      if (!o || typeof o.client_id !== 'string' || typeof o.text !== 'string') return;
      there.add(o.client_id);
      if (known.has(o.client_id)) return;
      if (typeof o.at === 'number' && now - o.at < ADOPT_AFTER && now >= o.at) { young = true; return; }
      known.add(o.client_id);
      adopted.add(o.client_id);
      S.outbox.push(o);
      if (list) showPending(o);
      added = true;
    });
    S.outbox = S.outbox.filter(function (o) {
      if (!adopted.has(o.client_id) || there.has(o.client_id)) return true;
      adopted.delete(o.client_id);
      sentOn.delete(o.client_id);
      return false;
    });
    if (young && !adoptTimer) {
      adoptTimer = setTimeout(function () {
        adoptTimer = null;
        if (adoptOutbox()) flush();
      }, ADOPT_AFTER);
    }
    return added;
  }
  // Writes this tab's state. Messages another tab of the visitor queued
  // too recently to take over (adoptOutbox leaves them to it for a while)
  // stay in storage: written over, they were lost once that tab closed.
  function save() {
    if (adoptOutbox()) scheduleFlush();
    if (S.history.length > 200) S.history = S.history.slice(-200);
    var out = S, v = stored();
    if (Array.isArray(v.outbox) && S.visitor && v.visitor === S.visitor) {
      var theirs = v.outbox.filter(function (o) {
        return o && typeof o.client_id === 'string' && typeof o.text === 'string' && !known.has(o.client_id);
      });
      if (theirs.length) {
        out = {};
        for (var k in S) out[k] = S[k];
        out.outbox = S.outbox.concat(theirs);
      }
    }
    try { localStorage.setItem(KEY, JSON.stringify(out)); } catch (e) { /* private mode: memory only */ }
  }

  /* ---------- helpers ---------- */
  function cmpSeq(a, b) {
    if (a == null || b == null) return a == null ? (b == null ? 0 : -1) : 1;
    var x = String(a).split('-'), y = String(b).split('-');
    for (var i = 0; i < Math.max(x.length, y.length); i++) {
      var p = Number(x[i] || 0), q = Number(y[i] || 0);
      if (isNaN(p) || isNaN(q)) return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
      if (p !== q) return p < q ? -1 : 1;
    }
    return 0;
  }
  function newId() {
    var b = crypto.getRandomValues(new Uint8Array(16)), s = '';
    for (var i = 0; i < b.length; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }
  function str(v) { return typeof v === 'string' ? v : v == null ? '' : String(v); }
  function bytes(s) { return new TextEncoder().encode(s).length; }
  function attNames(a) {
    return Array.isArray(a) ? a.map(function (x) { return str(x && typeof x === 'object' ? x.name : ''); }) : [];
  }
  // Builds an element; attribute names are always literals of this file, values are set with
  // setAttribute and text with textContent, never parsed as HTML.
  function h(tag, attrs) {
    var el = document.createElement(tag);
    for (var k in attrs || {}) {
      var v = attrs[k];
      if (v == null || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (var i = 2; i < arguments.length; i++) if (arguments[i]) el.appendChild(arguments[i]);
    return el;
  }
  function icon(d) {
    var ns = 'http://www.w3.org/2000/svg', svg = document.createElementNS(ns, 'svg'), path = document.createElementNS(ns, 'path');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    path.setAttribute('d', d);
    svg.appendChild(path);
    return svg;
  }
  function field(id, label, tag, attrs) {
    attrs.id = id; attrs['data-testid'] = id;
    return h('div', { class: 'field' }, h('label', { for: id, text: label }), h(tag, attrs));
  }

  /* ---------- DOM ---------- */
  var CSS = [
    ':host{all:initial !important}',
    '[hidden]{display:none !important}',
    '.sb{position:fixed;right:20px;bottom:20px;z-index:2147483000;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","PingFang SC","Microsoft YaHei",sans-serif;color:#1f2328;text-align:left;letter-spacing:normal;text-transform:none}',
    '.sb *{box-sizing:border-box;font:inherit;color:inherit;margin:0}',
    ':focus-visible{outline:3px solid #0b1f4d;outline-offset:2px;box-shadow:0 0 0 2px #fff}',
    '.sr{position:absolute !important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;padding:0;border:0}',
    '.launcher{width:56px;height:56px;border-radius:50%;border:0;background:#1d4ed8;color:#fff;cursor:pointer;display:flex;align-items:center;justify-content:center;box-shadow:0 4px 14px rgba(0,0,0,.25);position:relative;margin-left:auto}',
    '.launcher svg{width:28px;height:28px;fill:#fff}',
    '.composer svg{width:22px;height:22px;fill:none;stroke:#1d4ed8;stroke-width:2;stroke-linecap:round}',
    '.badge{position:absolute;top:4px;right:4px;width:12px;height:12px;border-radius:50%;background:#c62828;border:2px solid #fff}',
    '.panel{position:absolute;right:0;bottom:68px;width:360px;height:540px;max-height:calc(100vh - 100px);background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.3);display:flex;flex-direction:column;overflow:hidden;border:1px solid #d0d7de}',
    '@media (max-width:480px){.panel{position:fixed;inset:0;width:auto;height:auto;max-height:none;border-radius:0;border:0}.open .launcher{display:none}}',
    '.sb header{display:flex;align-items:center;justify-content:space-between;background:#1d4ed8;color:#fff;padding:10px 12px}',
    '.sb h2{font-size:16px;font-weight:600}',
    '.icon{background:transparent;border:0;color:inherit;cursor:pointer;width:36px;height:36px;border-radius:6px;font-size:22px;line-height:1}',
    '.status{padding:0 12px;font-size:13px;color:#3d444d}',
    '.status>div{padding:6px 0;border-bottom:1px solid #eaeef2}',
    '.error{display:flex;gap:8px;align-items:flex-start;background:#fdecea;color:#8a1c12;padding:8px 12px;font-size:13px}',
    '.error span{flex:1}',
    '.error button{background:transparent;border:1px solid #8a1c12;border-radius:4px;cursor:pointer;padding:0 6px}',
    '.body{flex:1;min-height:0;overflow-y:auto;padding:8px 12px}',
    '.body,.composer,.pane,header{position:relative}',
    'ol{list-style:none;padding:0}',
    '.msg{max-width:85%;width:fit-content;margin:6px 0;padding:7px 10px;border-radius:12px;background:#f1f3f5;white-space:pre-wrap;overflow-wrap:anywhere}',
    '.msg.visitor{margin-left:auto;background:#1d4ed8;color:#fff}',
    '.meta,.state{font-size:12px;color:#57606a}',
    '.visitor .meta,.visitor .state{color:#e3e9ff}',
    '.att{font-size:13px;text-decoration:underline dotted}',
    '.sys{text-align:center;font-size:12px;color:#57606a;margin:8px 0}',
    '.typing{font-size:12px;color:#57606a;font-style:italic;padding:4px 0}',
    '.pane{flex:1;min-height:0;padding:12px;overflow-y:auto;display:flex;flex-direction:column;gap:10px}',
    '.field{display:flex;flex-direction:column;gap:3px}',
    '.field input,.field textarea{border:1px solid #8c959f;border-radius:6px;padding:7px 8px;background:#fff;color:#1f2328;width:100%}',
    '.primary{background:#1d4ed8;color:#fff;border:0;border-radius:6px;padding:8px 14px;cursor:pointer;font-weight:600}',
    'button:disabled{opacity:.6;cursor:default}',
    '.rating{border:1px solid #d0d7de;border-radius:8px;margin-top:10px;padding:10px;display:flex;flex-direction:column;gap:8px}',
    'fieldset{border:0;padding:0}',
    '.sb legend{font-weight:600;margin-bottom:4px}',
    '.star{font-size:28px;color:#8c959f;cursor:pointer;padding:0 2px;border-radius:4px}',
    '.star.on{color:#b45309}',
    'input:focus-visible+.star{outline:3px solid #0b1f4d;outline-offset:1px}',
    '.composer{display:flex;align-items:flex-end;gap:6px;border-top:1px solid #d0d7de;padding:8px}',
    '.composer textarea{flex:1;resize:none;border:1px solid #8c959f;border-radius:8px;padding:7px 8px;max-height:120px;min-height:36px;background:#fff;color:#1f2328}',
    '.composer .icon{color:#1d4ed8;font-size:20px}',
    '.composer .primary{height:36px}',
    '@media (forced-colors:active){.msg,.panel,.launcher{border:1px solid CanvasText}}'
  ].join('\n');

  var isOpen = false, view = 'chat', lastWelcome = null, errTimer = null;
  var seen = new Set(), bySeq = new Map(), pendingEls = new Map();
  var lastAgentSeq = null, readSent = null, agentRead = null;
  var host, root, launcher, badge, panel, connEl, queueEl, agentEl, uploadEl, errBox, errText, body, list, typingEl;
  var ratingForm, ratingThanks, composer, input, sendBtn, attachBtn, fileInput, prechatForm, offlineForm, offlineDone;

  function build() {
    host = h('div', { id: 'switchboard-widget', 'data-testid': 'sb-host' });
    var shadow = host.attachShadow({ mode: 'open' });
    try {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
    } catch (e) {
      shadow.appendChild(h('style', { text: CSS }));
    }
    badge = h('span', { class: 'badge', hidden: true });
    launcher = h('button', {
      type: 'button', class: 'launcher', 'data-testid': 'sb-launcher', 'aria-label': t('open'),
      'aria-expanded': 'false', 'aria-controls': 'sb-panel', onclick: function () { isOpen ? close(true) : open(); }
    }, icon('M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2z'), badge);

    connEl = h('div', { 'data-testid': 'sb-connection', hidden: true });
    queueEl = h('div', { 'data-testid': 'sb-queue', hidden: true });
    agentEl = h('div', { 'data-testid': 'sb-agent', hidden: true });
    uploadEl = h('div', { 'data-testid': 'sb-upload', hidden: true });
    errText = h('span', { 'data-testid': 'sb-error-text' });
    errBox = h('div', { class: 'error', role: 'alert', 'data-testid': 'sb-error', hidden: true }, errText,
      h('button', { type: 'button', text: '×', 'aria-label': t('dismiss'), onclick: hideError }));

    list = h('ol', { class: 'messages', 'data-testid': 'sb-messages', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': t('messages') });
    typingEl = h('div', { class: 'typing', 'data-testid': 'sb-typing', hidden: true });
    buildRating();
    body = h('div', { class: 'body' }, list, typingEl, ratingForm);

    input = h('textarea', {
      id: 'sb-input', 'data-testid': 'sb-input', rows: '1', maxlength: String(MAX_TEXT),
      placeholder: t('placeholder'), autocomplete: 'off', oninput: onInput, onkeydown: onInputKey, onblur: stopTyping
    });
    fileInput = h('input', { type: 'file', class: 'sr', tabindex: '-1', 'aria-hidden': 'true', 'data-testid': 'sb-file', onchange: onFile });
    attachBtn = h('button', { type: 'button', class: 'icon', 'data-testid': 'sb-attach', 'aria-label': t('attach'), title: t('attach'), onclick: function () { fileInput.click(); } },
      icon('M21 11.5l-8.6 8.6a5.5 5.5 0 0 1-7.8-7.8l8.6-8.6a3.7 3.7 0 0 1 5.2 5.2l-8.6 8.6a1.8 1.8 0 0 1-2.6-2.6l7.9-7.9'));
    sendBtn = h('button', { type: 'submit', class: 'primary', 'data-testid': 'sb-send', text: t('send') });
    composer = h('form', { class: 'composer', 'data-testid': 'sb-composer', onsubmit: function (e) { e.preventDefault(); submitInput(); } },
      h('label', { for: 'sb-input', class: 'sr', text: t('inputLabel') }), attachBtn, fileInput, input, sendBtn);

    prechatForm = h('form', { class: 'pane', 'data-testid': 'sb-prechat-form', hidden: true, onsubmit: onPrechat },
      h('p', { text: t('prechatIntro') }),
      field('sb-prechat-name', t('name'), 'input', { type: 'text', name: 'name', autocomplete: 'name', maxlength: '128' }),
      field('sb-prechat-email', t('email'), 'input', { type: 'email', name: 'email', autocomplete: 'email', maxlength: '254' }),
      field('sb-prechat-topic', t('topic'), 'input', { type: 'text', name: 'topic', maxlength: '128' }),
      h('button', { type: 'submit', class: 'primary', 'data-testid': 'sb-prechat-submit', text: t('start') }));
    offlineForm = h('form', { class: 'pane', 'data-testid': 'sb-offline-form', hidden: true, onsubmit: onOffline },
      h('p', { text: t('offlineIntro') }),
      field('sb-offline-name', t('name'), 'input', { type: 'text', name: 'name', autocomplete: 'name', required: true, maxlength: '128' }),
      field('sb-offline-email', t('email'), 'input', { type: 'email', name: 'email', autocomplete: 'email', required: true, maxlength: '254' }),
      field('sb-offline-text', t('message'), 'textarea', { name: 'text', rows: '5', required: true, maxlength: String(MAX_TEXT) }),
      h('button', { type: 'submit', class: 'primary', 'data-testid': 'sb-offline-submit', text: t('send') }));
    offlineDone = h('p', { class: 'pane', 'data-testid': 'sb-offline-thanks', tabindex: '-1', hidden: true, text: t('offlineThanks') });

    panel = h('section', {
      id: 'sb-panel', class: 'panel', role: 'dialog', 'aria-labelledby': 'sb-title', 'data-testid': 'sb-panel', hidden: true
    },
      h('header', {}, h('h2', { id: 'sb-title', text: t('title') }),
        h('button', { type: 'button', class: 'icon', 'data-testid': 'sb-close', 'aria-label': t('close'), text: '×', onclick: function () { close(true); } })),
      h('div', { class: 'status', role: 'status' }, connEl, queueEl, agentEl, uploadEl),
      errBox, body, composer, prechatForm, offlineForm, offlineDone);
    root = h('div', { class: 'sb', lang: LOCALE === 'zh' ? 'zh-Hans' : LOCALE }, panel, launcher);
    root.addEventListener('keydown', function (e) {
      if (e.key === 'Escape' && isOpen && !e.isComposing) { e.preventDefault(); close(true); }
    });
    shadow.appendChild(root);
    document.body.appendChild(host);
  }

  function buildRating() {
    var fs = h('fieldset', {}, h('legend', { text: t('rateTitle') }));
    var stars = [];
    for (var i = 1; i <= 5; i++) {
      var label = t('star', { n: i, word: t('r' + i) });
      var inp = h('input', { type: 'radio', name: 'score', value: String(i), id: 'sb-star-' + i, 'data-testid': 'sb-star-' + i, class: 'sr' });
      var lab = h('label', { for: 'sb-star-' + i, class: 'star', title: label },
        h('span', { 'aria-hidden': 'true', text: '★' }), h('span', { class: 'sr', text: label }));
      stars.push(lab);
      fs.appendChild(inp); fs.appendChild(lab);
    }
    fs.addEventListener('change', function (e) {
      var n = Number(e.target.value);
      stars.forEach(function (l, j) { l.classList.toggle('on', j < n); });
    });
    ratingThanks = h('p', { 'data-testid': 'sb-rating-thanks', tabindex: '-1', hidden: true, text: t('thanks') });
    ratingForm = h('form', { class: 'rating', 'data-testid': 'sb-rating-form', hidden: true, onsubmit: onRating },
      fs, field('sb-rating-comment', t('comment'), 'textarea', { name: 'comment', rows: '2', maxlength: '1000' }),
      h('button', { type: 'submit', class: 'primary', 'data-testid': 'sb-rating-submit', text: t('submit') }));
    ratingForm = h('div', {}, ratingForm, ratingThanks);
    ratingForm.form = ratingForm.firstChild;
  }

  /* ---------- panel ---------- */
  function focusFirst() {
    var target = view === 'chat' ? input : view === 'prechat' ? prechatForm.querySelector('input')
      : view === 'offline' ? offlineForm.querySelector('input') : offlineDone;
    if (target) target.focus();
  }
  function open() {
    if (!root) return;
    isOpen = true;
    root.classList.add('open');
    panel.hidden = false;
    badge.hidden = true;
    launcher.setAttribute('aria-expanded', 'true');
    launcher.setAttribute('aria-label', t('close'));
    scrollDown();
    focusFirst();
    maybeRead();
  }
  function close(refocus) {
    if (!root) return;
    isOpen = false;
    root.classList.remove('open');
    panel.hidden = true;
    stopTyping();
    launcher.setAttribute('aria-expanded', 'false');
    launcher.setAttribute('aria-label', t('open'));
    if (refocus) launcher.focus();
  }
  function applyView() {
    body.hidden = composer.hidden = view !== 'chat';
    prechatForm.hidden = view !== 'prechat';
    offlineForm.hidden = view !== 'offline';
    offlineDone.hidden = view !== 'offline-done';
  }
  function decideView() {
    var before = view;
    if (view === 'offline-done') return;
    var w = lastWelcome || {};
    if (!lastWelcome || S.rate || S.conversation || S.outbox.length) view = 'chat';
    else if (w.form === 'prechat' && !S.prechatDone) view = 'prechat';
    else if (w.form === 'offline' || (w.form == null && w.online === false)) view = 'offline';
    else view = 'chat';
    applyView();
    if (view !== before && isOpen) focusFirst();
  }
  function scrollDown() { body.scrollTop = body.scrollHeight; }
  function setText(el, text) { el.textContent = text || ''; el.hidden = !text; }
  function showError(code) {
    code = /^[a-z0-9_]{1,40}$/.test(code || '') ? code : 'bad_frame';
    setText(errText, T.en['e_' + code] ? t('e_' + code) : t('e_bad_frame'));
    errBox.setAttribute('data-code', code);
    errBox.hidden = false;
    clearTimeout(errTimer);
    errTimer = setTimeout(hideError, 10000);
  }
  function hideError() { errBox.hidden = true; }

  /* ---------- messages ---------- */
  function remember(rec) {
    if (!S.history.some(function (x) { return x.seq === rec.seq; })) S.history.push(rec);
  }
  function fmtTime(at) {
    if (typeof at !== 'number') return '';
    try { return new Date(at).toLocaleTimeString(LOCALE === 'zh' ? 'zh-CN' : LOCALE, { hour: '2-digit', minute: '2-digit' }); } catch (e) { return ''; }
  }
  function place(li, seq) {
    if (seq != null) {
      for (var c = list.firstChild; c; c = c.nextSibling) {
        var s = c.getAttribute('data-seq');
        if ((s && cmpSeq(s, seq) > 0) || c.hasAttribute('data-client-id') && !s) { list.insertBefore(li, c); return; }
      }
    }
    list.appendChild(li);
  }
  function renderMsg(m) {
    var agent = m.from === 'agent';
    var meta = [agent ? (m.name || t('agent')) : t('you'), fmtTime(m.at)].filter(Boolean).join(' · ');
    var li = h('li', { class: 'msg ' + (agent ? 'agent' : 'visitor'), 'data-testid': 'sb-message', 'data-from': agent ? 'agent' : 'visitor' },
      h('div', { class: 'meta', text: meta }),
      h('div', { class: 'text', 'data-testid': 'sb-message-text', text: m.text }));
    (m.attachments || []).forEach(function (name) {
      li.appendChild(h('div', { class: 'att', text: t('attachment') + (name ? ': ' + name : '') }));
    });
    if (m.seq != null) { li.setAttribute('data-seq', m.seq); bySeq.set(String(m.seq), li); }
    if (m.id != null) li.setAttribute('data-id', m.id);
    if (!agent) {
      li.stateEl = h('div', { class: 'state', 'data-testid': 'sb-message-status' });
      li.appendChild(li.stateEl);
    }
    return li;
  }
  function setState(li, state) {
    if (!li || !li.stateEl) return;
    li.setAttribute('data-status', state);
    li.stateEl.textContent = t(state);
  }
  function showMessage(m) {
    var li = renderMsg(m);
    place(li, m.seq);
    if (m.from !== 'agent') setState(li, agentRead && cmpSeq(m.seq, agentRead) <= 0 ? 'read' : 'sent');
    scrollDown();
    return li;
  }
  function notice(text) {
    list.appendChild(h('li', { class: 'sys', 'data-testid': 'sb-notice', text: text }));
    scrollDown();
  }
  function markSent(li, seq) {
    li.removeAttribute('data-client-id');
    li.setAttribute('data-seq', seq);
    bySeq.set(String(seq), li);
    setState(li, agentRead && cmpSeq(seq, agentRead) <= 0 ? 'read' : 'sent');
  }
  function showPending(o) {
    var li = renderMsg({ from: 'visitor', text: o.text, attachments: o.names });
    li.setAttribute('data-client-id', o.client_id);
    pendingEls.set(o.client_id, li);
    list.appendChild(li);
    setState(li, connected ? 'sending' : 'retrying');
    scrollDown();
  }

  /* ---------- connection ---------- */
  var ws = null, connected = false, attempt = 0, retryTimer = null, flushTimer = null, stopped = false, lastRx = 0;
  var ctlQueue = [];
  // Form frames (prechat, offline, rating) sent but not yet answered: a
  // socket that drops before the answer loses them, so they go again after
  // the next welcome.
  var inFlight = [];
  // The visitor adoption of onWelcome: done already on this page, and the
  // last token the server refused.
  var visitorAdopted = false, refusedToken = null;
  var FORM_ERRORS = ['not_closed', 'bad_rating', 'bad_email', 'no_offline_form', 'offline_limit',
    'too_long', 'bad_client_id', 'unavailable'];

  function rawSend(f) {
    if (!ws || ws.readyState !== 1) return false;
    var s = JSON.stringify(f);
    if (bytes(s) > MAX_FRAME) return false;
    ws.send(s);
    return true;
  }
  function send(f) { return connected && rawSend(f); }
  function sendCtl(f) {
    if (bytes(JSON.stringify(f)) > MAX_FRAME) { // never sent: say so at once
      enableForms();
      showError('too_long');
    } else if (send(f)) inFlight.push(f);
    else ctlQueue.push(f);
  }

  function connect() {
    clearTimeout(retryTimer); retryTimer = null;
    if (stopped || ws) return;
    setText(connEl, attempt ? t('reconnecting') : t('connecting'));
    var sock;
    try { sock = new WebSocket(WS_URL); } catch (e) { schedule(); return; }
    ws = sock;
    sock.onopen = function () {
      lastRx = Date.now();
      rawSend({
        type: 'hello', v: 1, widget: WIDGET, token: S.token || undefined, locale: LOCALE,
        after: (S.conversation && S.lastSeq) || undefined,
        conversation: (S.conversation && S.lastSeq) ? S.conversation : undefined
      });
    };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      lastRx = Date.now();
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f && typeof f === 'object' && typeof f.type === 'string') dispatch(f);
    };
    sock.onclose = function () { drop(sock); };
    sock.onerror = function () { /* onclose follows */ };
  }
  function drop(sock) {
    if (ws !== sock) return;
    ws = null;
    connected = false;
    sentOn.clear();
    typingOn = false;
    ctlQueue = inFlight.concat(ctlQueue); inFlight = [];
    pendingEls.forEach(function (li) { setState(li, 'retrying'); });
    schedule();
  }
  function schedule() {
    if (stopped || retryTimer) return;
    var base = Math.min(30000, 500 * Math.pow(2, Math.min(attempt++, 16)));
    setText(connEl, t('reconnecting'));
    retryTimer = setTimeout(connect, base / 2 + Math.random() * base / 2);
  }
  function kick() {
    if (!ws && !stopped) connect();
  }
  function flush() {
    clearTimeout(flushTimer); flushTimer = null;
    if (!connected || view === 'prechat') return;
    var before = S.outbox.length;
    // One message in flight at a time, oldest first: the server stores them
    // in the order it takes them, and a refused one (rate_limited,
    // unavailable) sent again after a later one would be stored after it.
    // The next goes when the one in flight is acknowledged or fails.
    var held = false;
    S.outbox = S.outbox.filter(function (o) {
      var f = { type: 'message', client_id: o.client_id, text: o.text };
      if (o.attachments && o.attachments.length) f.attachments = o.attachments;
      if (bytes(JSON.stringify(f)) > MAX_FRAME) {
        // Over this server's limit (welcome said): it would close the
        // socket at every attempt.
        setState(pendingEls.get(o.client_id), 'failed');
        pendingEls.delete(o.client_id);
        showError('too_long');
        return false;
      }
      if (held) return true;
      held = true;
      if (sentOn.has(o.client_id)) return true;
      if (send(f)) {
        sentOn.add(o.client_id);
        setState(pendingEls.get(o.client_id), 'sending');
      }
      return true;
    });
    if (S.outbox.length !== before) save();
  }
  function scheduleFlush() {
    if (!flushTimer) flushTimer = setTimeout(flush, 2000 + Math.random() * 3000);
  }

  function dispatch(f) {
    switch (f.type) {
      case 'welcome': return onWelcome(f);
      case 'message': return onMessage(f);
      case 'ack': return onAck(f);
      case 'typing': return onTyping(f);
      case 'read':
        // Never backwards (an agent's older tab reporting late).
        if (agentRead && cmpSeq(f.seq, agentRead) <= 0) return;
        agentRead = f.seq;
        bySeq.forEach(function (li, seq) {
          if (li.getAttribute('data-from') === 'visitor' && cmpSeq(seq, agentRead) <= 0) setState(li, 'read');
        });
        return;
      case 'agent': return onAgent(f);
      case 'queue': return onQueue(f);
      case 'closed': return onClosed(f);
      case 'result': return onResult(f);
      case 'error': return onError(f);
      default: return; // pong and fields/types of later versions are ignored
    }
  }

  function onWelcome(f) {
    connected = true;
    attempt = 0;
    setText(connEl, '');
    if (typeof f.token === 'string') S.token = f.token;
    // Two tabs opened at once on a first visit each got a visitor. The one
    // whose welcome came second, with nothing of its own yet, becomes the
    // first one's visitor (a reload would have, leaving its conversation
    // behind): it says hello again with the stored token.
    // Once per page load, and never a token the server has just refused
    // (storage that cannot be written keeps offering it: a reconnect loop).
    var v = stored();
    if (!visitorAdopted && typeof f.visitor === 'string' && typeof v.visitor === 'string' &&
        typeof v.token === 'string' && v.token !== refusedToken &&
        v.visitor !== f.visitor && !f.conversation && !S.conversation && !S.outbox.length) {
      visitorAdopted = true;
      S.token = v.token; S.visitor = v.visitor;
      var sock = ws;
      drop(sock);
      if (sock) try { sock.close(); } catch (e) { /* already closing */ }
      connect();
      return;
    }
    if (typeof f.visitor === 'string') S.visitor = f.visitor;
    if (typeof f.max_frame_bytes === 'number' && f.max_frame_bytes >= 1024) {
      MAX_FRAME = Math.min(f.max_frame_bytes, 16000);
    }
    var conv = f.conversation || null;
    if (S.conversation && conv !== S.conversation) { // the stored conversation is over
      S.lastSeq = null; S.history = []; S.agent = null;
      S.prechatDone = false; S.prechat = null; // they were for that one
      setText(queueEl, ''); setText(agentEl, '');
    }
    S.conversation = conv;
    lastWelcome = f;
    save();
    decideView();
    // The pre-chat answers belong to the next contact: a new socket (the
    // server keeps them per socket) gets them again before any message.
    if (S.prechatDone && !conv && S.prechat &&
        !ctlQueue.some(function (c) { return c.type === 'prechat'; })) {
      ctlQueue.unshift(S.prechat);
    }
    var q = ctlQueue; ctlQueue = [];
    q.forEach(sendCtl);
    flush();
    maybeRead();
  }

  function onMessage(f) {
    if (f.seq == null) return;
    var sk = 's:' + f.seq, ik = f.id != null ? 'i:' + f.id : null;
    if (seen.has(sk) || (ik && seen.has(ik))) return;
    seen.add(sk); if (ik) seen.add(ik);
    // A conversation another tab opened: no welcome or ack of this tab
    // names it, and the next hello resumes it by its id. Not one that
    // closed (a reply logged just after the close arrives after `closed`).
    if (!S.conversation && typeof f.conversation === 'string' && f.conversation &&
        !ended.has(f.conversation)) {
      S.conversation = f.conversation;
      decideView();
    }
    // Our own message, echoed: stored, so never one to carry over from
    // storage or take over from another tab.
    if (typeof f.client_id === 'string') known.add(f.client_id);
    if (cmpSeq(f.seq, S.lastSeq) > 0) S.lastSeq = f.seq;
    var rec = {
      seq: f.seq, id: f.id, from: f.from === 'agent' ? 'agent' : 'visitor', name: str(f.name),
      text: str(f.text), at: f.at, attachments: attNames(f.attachments)
    };
    remember(rec);
    save();
    if (rec.from === 'visitor') {
      // Our own message echoed before its ack: adopt the pending bubble instead of a second one.
      var mine = null;
      // Matched by client_id when the server names it, else by text.
      pendingEls.forEach(function (li, id) {
        if (!mine && li.hasAttribute('data-client-id') && (f.client_id != null ? id === f.client_id
          : li.querySelector('.text').textContent === rec.text)) mine = li;
      });
      if (mine) { markSent(mine, f.seq); return; }
      showMessage(rec);
      return;
    }
    showMessage(rec);
    lastAgentSeq = f.seq;
    setText(typingEl, '');
    if (!isOpen) { badge.hidden = false; launcher.setAttribute('aria-label', t('openNew')); }
    maybeRead();
  }

  function onAck(f) {
    var i = -1;
    S.outbox.forEach(function (o, j) { if (o.client_id === f.client_id) i = j; });
    var o = i >= 0 ? S.outbox.splice(i, 1)[0] : null;
    sentOn.delete(f.client_id);
    // A resend's ack names the conversation its first copy went into; the
    // socket follows it only when it followed none (the server's rule:
    // docs/widget-protocol.md). Adopting it while on another conversation
    // sent the next hello for the wrong one: its history was wiped, or the
    // closed one was resumed and this one's replies and close were missed.
    var elsewhere = f.conversation && S.conversation && f.conversation !== S.conversation;
    if (f.conversation && !S.conversation) S.conversation = f.conversation;
    var li = pendingEls.get(f.client_id);
    pendingEls.delete(f.client_id);
    if (f.seq != null) {
      var sk = 's:' + f.seq;
      if (li && li.hasAttribute('data-client-id')) {
        if (seen.has(sk) && bySeq.get(String(f.seq)) !== li) li.remove(); else markSent(li, f.seq);
      }
      seen.add(sk);
      if (o && !elsewhere) remember({ seq: f.seq, from: 'visitor', text: o.text, attachments: o.names || [] });
    }
    save();
    flush();
  }

  var typingOn = false, typingSentAt = 0, typingTimer = null, agentTypingTimer = null;
  function onTyping(f) {
    clearTimeout(agentTypingTimer);
    if (f.on) {
      setText(typingEl, t('typing', { name: str(f.name) || t('agent') }));
      agentTypingTimer = setTimeout(function () { setText(typingEl, ''); }, 8000);
    } else setText(typingEl, '');
  }
  function onInput() {
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight + 2, 120) + 'px';
    if (!input.value) { stopTyping(); return; }
    var now = Date.now();
    if (!typingOn || now - typingSentAt > 5000) {
      if (send({ type: 'typing', on: true })) { typingOn = true; typingSentAt = now; }
    }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(stopTyping, 4000);
  }
  function stopTyping() {
    clearTimeout(typingTimer);
    if (typingOn) { typingOn = false; send({ type: 'typing', on: false }); }
  }
  function onInputKey(e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submitInput();
    }
  }
  function submitInput() {
    var text = input.value.trim();
    if (!text) return;
    if (sendMessage(text)) {
      input.value = '';
      input.style.height = '';
      stopTyping();
    }
    input.focus();
  }
  function sendMessage(text, attachments, names) {
    var o = { client_id: newId(), text: text.slice(0, MAX_TEXT), at: Date.now() };
    if (attachments) { o.attachments = attachments; o.names = names; }
    if (bytes(JSON.stringify(o)) > MAX_FRAME - 200) { showError('too_long'); return false; }
    if (S.rate) { S.rate = false; ratingForm.form.hidden = true; ratingThanks.hidden = true; }
    known.add(o.client_id);
    S.outbox.push(o);
    save();
    showPending(o);
    flush();
    return true;
  }

  function maybeRead() {
    if (isOpen && connected && document.visibilityState === 'visible' && lastAgentSeq != null &&
        cmpSeq(lastAgentSeq, readSent) > 0 && send({ type: 'read', seq: lastAgentSeq })) readSent = lastAgentSeq;
  }

  function onAgent(f) {
    var name = str(f.name) || t('agent');
    if (f.state === 'joined') {
      setText(queueEl, '');
      setText(agentEl, t('joined', { name: name }));
      if (S.agent !== name) notice(t('joined', { name: name }));
      S.agent = name;
    } else if (f.state === 'left') {
      setText(agentEl, t('left', { name: name }));
      setText(typingEl, '');
      if (S.agent) notice(t('left', { name: name }));
      S.agent = null;
    }
    save();
  }
  function onQueue(f) {
    queueEl.textContent = '';
    var n = Number(f.position);
    if (!(n >= 1)) { queueEl.hidden = true; return; }
    queueEl.appendChild(h('div', { 'data-testid': 'sb-queue-position', text: t('queue', { n: n }) }));
    if (typeof f.estimated_wait_secs === 'number') {
      queueEl.appendChild(h('div', { 'data-testid': 'sb-queue-wait', text: t('wait', { m: Math.max(1, Math.ceil(f.estimated_wait_secs / 60)) }) }));
    }
    queueEl.hidden = false;
  }
  function onClosed(f) {
    notice(t('ended'));
    // Kept until rated, so that a reload can still rate it.
    S.rate = (typeof f.conversation === 'string' && f.conversation) || S.conversation || true;
    if (typeof S.rate === 'string') ended.add(S.rate);
    S.conversation = null; S.lastSeq = null; S.history = []; S.agent = null;
    S.prechatDone = false; S.prechat = null;
    save();
    setText(queueEl, ''); setText(agentEl, ''); setText(typingEl, '');
    showRating();
  }
  function showRating() {
    var form = ratingForm.form;
    form.reset();
    form.querySelectorAll('.star').forEach(function (l) { l.classList.remove('on'); });
    form.hidden = false;
    ratingThanks.hidden = true;
    form.querySelector('[type=submit]').disabled = false;
    if (view !== 'chat') { view = 'chat'; applyView(); }
    scrollDown();
  }
  function onRating(e) {
    e.preventDefault();
    var form = ratingForm.form, checked = form.querySelector('input[name=score]:checked');
    if (!checked) { showError('bad_rating'); return; }
    var f = { type: 'rating', score: Number(checked.value) };
    if (typeof S.rate === 'string') f.conversation = S.rate;
    var comment = form.querySelector('textarea').value.trim();
    if (comment) f.comment = comment.slice(0, 1000);
    form.querySelector('[type=submit]').disabled = true;
    sendCtl(f);
  }
  function onPrechat(e) {
    e.preventDefault();
    var f = { type: 'prechat' };
    ['name', 'email', 'topic'].forEach(function (k) {
      var v = prechatForm.elements[k].value.trim();
      if (v) f[k] = v;
    });
    prechatForm.querySelector('[type=submit]').disabled = true;
    S.prechat = f; save();
    sendCtl(f);
  }
  function onOffline(e) {
    e.preventDefault();
    var f = { type: 'offline', client_id: newId() };
    ['name', 'email', 'text'].forEach(function (k) { f[k] = offlineForm.elements[k].value.trim(); });
    if (!f.name || !f.email || !f.text) return;
    offlineForm.querySelector('[type=submit]').disabled = true;
    sendCtl(f);
  }
  function enableForms() {
    [prechatForm, offlineForm, ratingForm.form].forEach(function (form) { form.querySelector('[type=submit]').disabled = false; });
  }
  function answered(type) {
    for (var i = 0; i < inFlight.length; i++) {
      if (type == null || inFlight[i].type === type) { inFlight.splice(i, 1); return; }
    }
  }
  function onResult(f) {
    answered(f.of);
    enableForms();
    if (!f.ok) { showError('bad_frame'); return; }
    if (f.of === 'prechat') {
      S.prechatDone = true; save();
      // Answers sent again after a reconnect leave the view as it is (the
      // offline form, when nobody can answer now).
      if (view === 'prechat') {
        view = 'chat'; applyView();
        if (isOpen) input.focus();
      }
      flush();
    } else if (f.of === 'rating') {
      S.rate = false; save();
      ratingForm.form.hidden = true;
      ratingThanks.hidden = false;
      if (isOpen) ratingThanks.focus();
    } else if (f.of === 'offline') {
      offlineForm.reset();
      view = 'offline-done'; applyView();
      if (isOpen) offlineDone.focus();
    }
  }
  function onError(f) {
    var code = str(f.code);
    enableForms();
    if (code === 'bad_session') {
      refusedToken = S.token; S.visitor = null;
      S.token = null; S.conversation = null; S.lastSeq = null; S.history = []; S.prechatDone = false; S.prechat = null; S.agent = null;
      save();
      ctlQueue = []; inFlight = [];
      showError(code);
      attempt = 0;
      var sock = ws;
      drop(sock);
      if (sock) try { sock.close(); } catch (e) { /* already closing */ }
      return;
    }
    if (code === 'unsupported_version') {
      stopped = true;
      clearTimeout(retryTimer);
      if (ws) try { ws.close(); } catch (e) { /* already closing */ }
      setText(connEl, '');
      showError(code);
      return;
    }
    // The hello itself was refused (unavailable, rate_limited): the server
    // reads nothing else on this socket, so a new one later, not a wait
    // for its 30 s deadline.
    if (!connected) {
      var refused = ws;
      drop(refused);
      if (refused) try { refused.close(); } catch (e) { /* already closing */ }
      showError(code);
      return;
    }
    // A form's error names no message (the server answers frames in order:
    // the oldest form waiting is the one answered). Codes other frames may
    // get too (rate_limited, bad_frame) leave it waiting: at worst it is
    // sent again after a reconnect, which changes nothing.
    if (f.client_id == null && FORM_ERRORS.indexOf(code) >= 0) answered(null);
    if (f.client_id != null) {
      var li = pendingEls.get(f.client_id);
      if (code === 'unavailable' || code === 'rate_limited') {
        sentOn.delete(f.client_id);
        setState(li, 'retrying');
        scheduleFlush();
      } else {
        S.outbox = S.outbox.filter(function (o) { return o.client_id !== f.client_id; });
        pendingEls.delete(f.client_id);
        setState(li, 'failed');
        save();
        flush();
      }
    } else if (code === 'unavailable' || code === 'rate_limited') {
      // Not about one message (an older server names none): whatever
      // waits in the outbox goes again later.
      sentOn.clear();
      scheduleFlush();
    }
    showError(code);
  }

  /* ---------- attachments ---------- */
  function onFile() {
    var file = fileInput.files && fileInput.files[0];
    fileInput.value = '';
    if (file) upload(file);
  }
  function upload(file) {
    if (!S.token) { showError('upload_failed'); return; }
    setText(uploadEl, t('uploading', { file: file.name }));
    attachBtn.disabled = true;
    fetch(CHANNEL_URL + '/upload', {
      method: 'POST', mode: 'cors', credentials: 'omit', body: file,
      headers: {
        Authorization: 'Bearer ' + S.token,
        'Content-Type': file.type || 'application/octet-stream',
        'X-Filename': encodeURIComponent(file.name)
      }
    }).then(function (r) {
      if (r.status === 413 || r.status === 415) throw new Error('upload_' + r.status);
      if (!r.ok) throw new Error('upload_failed');
      return r.json();
    }).then(function (j) {
      if (!j || typeof j.id !== 'string') throw new Error('upload_failed');
      var name = str(j.name) || file.name;
      sendMessage(name, [j.id], [name]);
    }).catch(function (e) {
      showError(/^upload_/.test(e && e.message) ? e.message : 'upload_failed');
    }).then(function () {
      attachBtn.disabled = false;
      setText(uploadEl, '');
    });
  }

  /* ---------- start ---------- */
  function init() {
    build();
    S.history.forEach(function (m) {
      if (m.seq == null || seen.has('s:' + m.seq)) return;
      seen.add('s:' + m.seq);
      if (m.id != null) seen.add('i:' + m.id);
      showMessage(m);
      if (m.from === 'agent') lastAgentSeq = m.seq;
    });
    S.outbox.forEach(showPending);
    if (S.agent) setText(agentEl, t('joined', { name: S.agent }));
    if (S.rate) showRating();
    applyView();
    connect();
    setInterval(function () {
      if (!ws) return;
      if (Date.now() - lastRx > 70000) { var s = ws; drop(s); try { s.close(); } catch (e) { /* gone */ } return; }
      send({ type: 'ping' });
    }, 25000);
    window.addEventListener('online', kick);
    // Another tab of this visitor saved: take over what it queued.
    window.addEventListener('storage', function (e) {
      if (e.key === KEY && adoptOutbox()) flush();
    });
    document.addEventListener('visibilitychange', function () {
      if (document.visibilityState === 'visible') { kick(); maybeRead(); }
    });
  }

  window.SwitchboardWidget = Object.freeze({
    open: open,
    close: function () { close(false); },
    state: function () {
      return {
        connected: connected, conversation: S.conversation, lastSeq: S.lastSeq,
        pending: S.outbox.length, open: isOpen, view: view, locale: LOCALE, visitor: S.visitor
      };
    }
  });
  if (document.body) init(); else document.addEventListener('DOMContentLoaded', init);
})();
