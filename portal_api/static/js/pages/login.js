// Sign in with e-mail and password; then on to the audience's start page.

import { session, signIn } from "../api.js";
import { errorBox, h } from "../dom.js";

export const title = "Sign in";
let notice = "";

/** A message for the next time the login page shows (e.g. "your session expired"). */
export function setNotice(text) {
  notice = text;
}

export function render(page, { go, homeOf }) {
  const email = h("input", { id: "login-email", name: "username", type: "email", autocomplete: "username",
    required: true, testid: "login-email" });
  const password = h("input", { id: "login-password", name: "password", type: "password",
    autocomplete: "current-password", required: true, testid: "login-password" });
  const submit = h("button", { type: "submit", testid: "login-submit" }, "Sign in");
  const messages = h("div", { class: "messages", "aria-live": "assertive" });
  if (notice) {
    messages.append(h("p", { class: "status warn", testid: "login-notice" }, notice));
    notice = "";
  }
  const form = h("form", { class: "card login", testid: "login-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "login-email" }, "E-mail"), email),
    h("div", { class: "field" }, h("label", { for: "login-password" }, "Password"), password),
    messages, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    messages.replaceChildren();
    try {
      const who = await signIn(email.value.trim(), password.value);
      go(homeOf(who));
    } catch (err) {
      messages.append(errorBox(err));
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  if (session.token && session.who) {
    page.append(h("p", { class: "status" }, `You are signed in as ${session.who.label}. `,
      h("a", { href: homeOf(session.who) }, "Continue"), " or sign in as someone else."));
  }
  page.append(h("h1", {}, "Sign in to VINsight"),
    h("p", { class: "muted" }, "Dealers, insurers and drivers sign in here with their e-mail address."), form);
  email.focus();
}
