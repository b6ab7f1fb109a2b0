// Actions: every state-changing button carries data-action="/actions/..." and posts
// through postAction, which adds the admin API key (asked once, kept in this tab's
// sessionStorage) and the CSRF token (the modelyard_csrf cookie, echoed as a header).

const KEY_STORE = "modelyard.apiKey";

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "modelyard_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

export function flash(message, kind = "info") {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = message;
  box.className = `flash ${kind}`;
  box.hidden = false;
}

function askKey() {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  if (!dialog || !input) return Promise.resolve(null);
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" && input.value ? input.value : null),
      { once: true },
    );
    dialog.showModal();
  });
}

export async function apiKey() {
  let key = sessionStorage.getItem(KEY_STORE);
  if (!key) {
    key = await askKey();
    if (key) sessionStorage.setItem(KEY_STORE, key);
  }
  return key;
}

// POST body (JSON) to an /actions/ path; resolves to the answer's JSON, rejects with an
// Error whose message is the server's one line.
export async function postAction(path, body = {}) {
  const key = await apiKey();
  if (!key) throw new Error("No API key given");
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: {
      "Content-Type": "application/json",
      "Authorization": `Bearer ${key}`,
      "X-CSRF-Token": csrfToken(),
    },
    body: JSON.stringify(body),
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch (_) {
    answer = {};
  }
  if (!response.ok) {
    if (response.status === 401) sessionStorage.removeItem(KEY_STORE);
    const message = answer.error ? answer.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return answer;
}

function bodyOf(button) {
  const body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
  if (button.dataset.form) {
    const form = document.getElementById(button.dataset.form);
    if (form) {
      for (const [name, value] of new FormData(form)) body[name] = value;
    }
  }
  return body;
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-action]");
  if (!button) return;
  event.preventDefault();
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    const answer = await postAction(button.dataset.action, bodyOf(button));
    flash(answer.message || "Done", "ok");
    if (button.dataset.reload !== "false") window.setTimeout(() => window.location.reload(), 400);
  } catch (error) {
    flash(error.message, "error");
  } finally {
    button.disabled = false;
  }
});
