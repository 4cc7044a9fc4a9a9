// The single-page portal: a hash router, the header, and one page per audience.
// Pages never decide what a caller may see: they ask the API and show its data or its refusal.

import { session } from "./api.js";
import { clear, h } from "./dom.js";
import * as dealer from "./pages/dealer.js";
import * as driver from "./pages/driver.js";
import * as insurer from "./pages/insurer.js";
import * as login from "./pages/login.js";
import * as trip from "./pages/trip.js";

const HOME = { dealer: "#/dealer", insurer: "#/insurer", driver: "#/driver" };
const ROUTES = [
  [/^#\/login$/, login],
  [/^#\/dealer$/, dealer],
  [/^#\/insurer$/, insurer],
  [/^#\/driver$/, driver],
  [/^#\/driver\/trips\/(\d+)$/, trip],
];
const NAV = {
  dealer: [["#/dealer", "Dealer dashboard"]],
  insurer: [["#/insurer", "Insurer dashboard"]],
  driver: [["#/driver", "My car"]],
};

export function homeOf(who) {
  return HOME[who?.audience] ?? "#/login";
}

export function go(hash) {
  if (window.location.hash === hash) render();
  else window.location.hash = hash;
}

function renderHeader(route) {
  const who = session.who;
  const nav = clear(document.getElementById("site-nav"));
  const user = clear(document.getElementById("site-user"));
  if (!who || !session.token) return;
  nav.append(h("ul", {}, (NAV[who.audience] ?? []).map(([href, text]) =>
    h("li", {}, h("a", { href, "aria-current": route.startsWith(href) ? "page" : null }, text)))));
  const org = who.organisation ? `, ${who.organisation}` : "";
  user.append(
    h("span", { testid: "signed-in-as" }, `${who.label} (${who.role}${org})`),
    h("button", {
      type: "button", class: "secondary", testid: "sign-out",
      onclick: () => {
        session.clear();
        go("#/login");
      },
    }, "Sign out"));
}

let renderCount = 0;

async function render() {
  const hash = window.location.hash || "";
  if (!session.token && hash !== "#/login") {
    window.location.replace("#/login");
    return;
  }
  if (!hash || hash === "#/") {
    window.location.replace(homeOf(session.who));
    return;
  }
  renderHeader(hash);
  const main = document.getElementById("main");
  const page = h("div", { class: "page", testid: "page", "data-route": hash });
  main.replaceChildren(page);
  const match = ROUTES.map(([re, mod]) => [hash.match(re), mod]).find(([m]) => m);
  const mine = ++renderCount;
  if (!match) {
    page.append(h("h1", {}, "Page not found"), h("p", {}, "There is no page at this address. ",
      h("a", { href: homeOf(session.who) }, "Go to your start page.")));
    return;
  }
  const [m, mod] = match;
  document.title = `${mod.title} · VINsight`;
  await mod.render(page, { params: m.slice(1), go, homeOf });
  // Move focus to the new page's heading (for keyboard and screen-reader users), unless the user
  // already moved on.
  if (mine === renderCount) page.querySelector("h1")?.setAttribute("tabindex", "-1");
  if (mine === renderCount && document.activeElement === document.body) page.querySelector("h1")?.focus();
}

window.addEventListener("hashchange", render);
window.addEventListener("vinsight:signed-out", (e) => {
  login.setNotice(`You have been signed out: ${e.detail}`);
  go("#/login");
});
render();
