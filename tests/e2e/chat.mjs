// The web chat page, end to end in headless Chromium: two users in two browser contexts sign
// in, become friends, chat; the unread badge appears live and clears when read; older history
// pages in; search finds a message. Screenshots go to IM_E2E_OUT.
//
//   IM_E2E_BASE=http://127.0.0.1:8080 IM_E2E_OUT=target/e2e node tests/e2e/chat.mjs
// (tests/e2e.sh starts a server and runs this.)
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const base = process.env.IM_E2E_BASE ?? "http://127.0.0.1:8080";
const out = process.env.IM_E2E_OUT ?? "target/e2e";
mkdirSync(out, { recursive: true });

// As the machine's notes say Chromium must run here: no sandbox as root, no background
// networking (the closed network refuses it), a fresh profile per context.
const browser = await chromium.launch({
  executablePath: process.env.IM_E2E_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const step = (what) => console.log(`e2e: ${what}`);
let failed = false;

async function user(id) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => { failed = true; console.error(`[${id}] page error: ${e.message}`); });
  // (A first visit's GET /v1/me is a 404 by design: no profile yet. Chromium logs it.)
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("404")) console.error(`[${id}] console: ${m.text()}`);
  });
  await page.goto(base);
  await page.getByTestId("signin-user").fill(id);
  await page.getByTestId("signin-button").click();
  await page.getByTestId("whoami").filter({ hasText: id }).waitFor();
  // Live updates are on before anything is asserted about them.
  await page.locator("#live.on").waitFor();
  return page;
}

// The unread badge of the conversation with `title`, as text ("" when there is none).
async function badge(page, title) {
  const row = page.getByTestId("conversation").filter({ hasText: title });
  await row.waitFor();
  const b = row.getByTestId("unread");
  return (await b.count()) ? (await b.textContent()) : "";
}

async function shot(page, name) {
  await page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
}

try {
  step("alice and bob sign in");
  const alice = await user("alice");
  const bob = await user("bob");

  step("alice asks bob to be friends; bob sees the request live and accepts");
  await alice.getByTestId("add-friend-user").fill("bob");
  await alice.getByTestId("add-friend").getByRole("button").click();
  await bob.getByTestId("request").filter({ hasText: "alice" }).getByTestId("accept").click();
  await bob.getByTestId("friend").filter({ hasText: "alice" }).waitFor();
  // Alice hears of the acceptance over her WebSocket, without reloading.
  await alice.getByTestId("friend").filter({ hasText: "bob" }).waitFor({ timeout: 5000 });

  step("alice writes; bob's badge appears live");
  await alice.getByTestId("friend").filter({ hasText: "bob" }).click();
  await alice.getByTestId("composer-text").fill("hello bob, lunch at noon?");
  await alice.getByTestId("send").click();
  await alice.getByTestId("message").filter({ hasText: "lunch at noon" }).waitFor();
  await bob.getByTestId("conversation").filter({ hasText: "alice" }).getByTestId("unread").filter({ hasText: "1" }).waitFor({ timeout: 5000 });
  await shot(bob, "1-bob-unread-badge");
  await shot(alice, "1-alice-sent");

  step("bob opens the conversation: the message is there and the badge clears");
  await bob.getByTestId("conversation").filter({ hasText: "alice" }).click();
  await bob.getByTestId("message").filter({ hasText: "lunch at noon" }).waitFor();
  await bob.getByTestId("conversation").filter({ hasText: "alice" }).getByTestId("unread").waitFor({ state: "detached", timeout: 5000 });
  assert.equal(await badge(bob, "alice"), "");

  step("bob answers; alice, in the open conversation, sees it live");
  await bob.getByTestId("composer-text").fill("yes! see you there");
  await bob.getByTestId("composer-text").press("Enter");
  await alice.getByTestId("message").filter({ hasText: "see you there" }).waitFor({ timeout: 5000 });
  // Read as it arrived: the conversation on screen shows no badge.
  await alice.getByTestId("conversation").filter({ hasText: "see you there" }).waitFor({ timeout: 5000 });
  assert.equal(await badge(alice, "bob"), "");
  await shot(alice, "2-alice-live-reply");

  step("history pages in: 35 more messages, 30 at first, the rest on request");
  const token = (await (await fetch(`${base}/v1/dev/token`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user_id: "alice" }) })).json()).token;
  const conversation = await bob.getByTestId("conversation").filter({ hasText: "alice" }).getAttribute("data-conversation-id");
  for (let i = 1; i <= 35; i++) {
    const r = await fetch(`${base}/v1/conversations/${conversation}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ client_msg_id: `bulk-${i}`, type: "text", text: `bulk message ${i}` }),
    });
    assert.ok(r.ok, `send ${i}: ${r.status}`);
  }
  await bob.reload();
  await bob.getByTestId("signin-user").fill("bob");
  await bob.getByTestId("signin-button").click();
  await bob.getByTestId("conversation").filter({ hasText: "alice" }).click();
  await bob.getByTestId("message").filter({ hasText: "bulk message 35" }).waitFor();
  assert.equal(await bob.getByTestId("message").count(), 30, "a first page of 30");
  await bob.getByTestId("older").click();
  await bob.getByTestId("message").filter({ hasText: "lunch at noon" }).waitFor();
  assert.equal(await bob.getByTestId("message").count(), 37, "every message, once, after paging");
  await bob.getByTestId("older").waitFor({ state: "hidden" });

  step("bob searches and finds alice's message");
  let found = false;
  for (let attempt = 0; attempt < 20 && !found; attempt++) {
    await bob.getByTestId("search-q").fill("lunch");
    await bob.getByTestId("search-q").press("Enter");
    found = await bob.getByTestId("search-result").filter({ hasText: "lunch at noon" }).isVisible().catch(() => false);
    if (!found) await bob.waitForTimeout(500); // indexed within about a second
  }
  assert.ok(found, "search finds the message");
  await shot(bob, "3-bob-search");
  assert.ok(!failed, "no page errors");
  step("passed");
} catch (e) {
  console.error(`e2e: FAILED: ${e.stack ?? e}`);
  for (const [i, ctx] of browser.contexts().entries()) {
    for (const page of ctx.pages()) await page.screenshot({ path: `${out}/failure-${i}.png`, fullPage: true }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
