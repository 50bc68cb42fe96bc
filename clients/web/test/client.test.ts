// The client against a scripted server: transports and fallback, joining, the token kept
// across a reload, coming back after a dropped connection, goodbyes.

import assert from "node:assert/strict";
import { mock, test } from "node:test";

import { ClientError, type ClientOptions, connect, type GameClient } from "../src/client.js";
import { encodeStream, type Frame, type Hello, StreamDecoder, type Welcome } from "../src/protocol.js";
import { connectToken, discover, openTransport, TransportError } from "../src/transport.js";
import { FakeTransport, MemoryStorage } from "./support.js";

const URLS = { webTransport: { url: "https://127.0.0.1:4433/" }, webSocket: { url: "ws://127.0.0.1:8080/ws" } };

function welcome(playerId: number, token: string, ackEvery = 0): Welcome {
  return {
    t: "welcome",
    version: 1,
    player_id: playerId,
    match_id: "m".repeat(32),
    game: "arena",
    game_version: 1,
    tick_rate: 60,
    send_rate: 30,
    tick: 5,
    token,
    config: {},
    spectator_delay: 0,
    ack_every: ackEvery,
  };
}

/** A transport whose far end answers each hello with `answer` (a welcome, or a goodbye and a close). */
class ScriptedServer extends FakeTransport {
  hellos: Hello[] = [];
  private decoder = new StreamDecoder();

  constructor(
    kind: "webtransport" | "websocket",
    private readonly answer: (hello: Hello) => Frame[],
  ) {
    super(kind);
  }

  override sendStream(data: Uint8Array): void {
    super.sendStream(data);
    for (const frame of this.decoder.feed(data)) {
      if (frame.t !== "hello") continue;
      this.hellos.push(frame);
      const replies = this.answer(frame);
      queueMicrotask(() => {
        for (const reply of replies) this.deliverStream(encodeStream(reply));
        if (replies.some((r) => r.t === "bye")) this.drop("closed by the server");
      });
    }
  }
}

/** Open options whose transports are scripted servers, one per connection, recorded in `opened`. */
function scripted(answer: (hello: Hello) => Frame[], opened: ScriptedServer[], extra: Partial<ClientOptions> = {}) {
  return {
    ...URLS,
    openers: {
      webtransport: async () => {
        const server = new ScriptedServer("webtransport", answer);
        opened.push(server);
        return server;
      },
    },
    ...extra,
  };
}

test("without WebTransport in the browser the client falls back to the WebSocket and says why", async () => {
  const opened: string[] = [];
  const result = await openTransport({
    ...URLS,
    openers: {
      webtransport: async () => {
        throw new TransportError("WebTransport timed out after 5000 ms");
      },
      websocket: async () => {
        opened.push("ws");
        return new FakeTransport("websocket");
      },
    },
  });
  assert.equal(result.transport.kind, "websocket");
  assert.deepEqual(result.failures, ["webtransport: WebTransport timed out after 5000 ms"]);
  // Node has no WebTransport at all: the built-in opener says so and the next is tried.
  const plain = await openTransport({
    webTransport: URLS.webTransport,
    webSocket: URLS.webSocket,
    openers: { websocket: async () => new FakeTransport("websocket") },
  });
  assert.deepEqual(plain.failures, ["webtransport: this browser has no WebTransport"]);
});

test("the order of transports is the caller's, and no transport at all is a plain error", async () => {
  const only = await openTransport({
    ...URLS,
    transports: ["websocket"],
    openers: { webtransport: async () => new FakeTransport("webtransport"), websocket: async () => new FakeTransport("websocket") },
  });
  assert.equal(only.transport.kind, "websocket");
  await assert.rejects(openTransport({}), /no transport to try/);
  await assert.rejects(
    openTransport({ ...URLS, openers: { webtransport: async () => Promise.reject(new Error("refused")), websocket: async () => Promise.reject(new Error("down")) } }),
    /cannot connect: webtransport: refused; websocket: down/,
  );
});

test("joining sends a hello that asks for packed deltas and an ack grid, and keeps the token for this tab", async () => {
  const storage = new MemoryStorage();
  const opened: ScriptedServer[] = [];
  const client = await connect(scripted(() => [welcome(3, "m.3.secret", 2)], opened, { storage }));
  assert.equal(client.transportKind, "webtransport");
  const got = await client.join("alice");
  assert.equal(got.player_id, 3);
  assert.deepEqual(opened[0]!.hellos[0], {
    t: "hello", version: 1, name: "alice", token: "", caps: ["deflate", "ack-grid"], spectate: "", follow: 0, connect_token: "",
  }); // decoded: connect_token at its default (the wire leaves it out)
  assert.equal(client.world.ackEvery, 2, "the welcome's ack grid reaches the world");
  assert.equal(client.inputBatch, 2, "60 Hz inputs, 30 views a second: a datagram every 2 inputs");
  const stored = JSON.parse(storage.getItem("tickline:https://127.0.0.1:4433/")!);
  assert.deepEqual(stored, { token: "m.3.secret", name: "alice", match_id: "m".repeat(32), player_id: 3 });
  client.close();
  assert.equal(storage.getItem("tickline:https://127.0.0.1:4433/"), null, "a goodbye gives the place up: no token to keep");
  assert.equal(await client.closed, "client done");
});

test("a reload within the grace period comes back as the same player with the stored token", async () => {
  const storage = new MemoryStorage();
  const opened: ScriptedServer[] = [];
  const answer = (hello: Hello): Frame[] => [hello.token ? welcome(3, hello.token) : welcome(3, "m.3.secret")];
  const first = await connect(scripted(answer, opened, { storage }));
  await first.join("alice");
  first.abandon(); // the page goes away without a goodbye
  const second = await connect(scripted(answer, opened, { storage }));
  const back = await second.join("alice");
  assert.equal(opened[1]!.hellos[0]!.token, "m.3.secret");
  assert.equal(back.player_id, 3);
  const other = await connect(scripted(answer, opened, { storage }));
  await other.join("bob");
  assert.equal(opened[2]!.hellos[0]!.token, "", "another name does not take alice's place");
});

test("a stored token the server refuses is forgotten, and the client joins afresh", async () => {
  const storage = new MemoryStorage();
  storage.setItem("tickline:game", JSON.stringify({ token: "old.1.x", name: "alice", match_id: "old", player_id: 1 }));
  const opened: ScriptedServer[] = [];
  const answer = (hello: Hello): Frame[] =>
    hello.token ? [{ t: "bye", reason: "unknown or expired reconnect token; join again without one" }] : [welcome(7, "new.7.y")];
  const client = await connect(scripted(answer, opened, { storage, storageKey: "tickline:game" }));
  const got = await client.join("alice");
  assert.equal(got.player_id, 7);
  assert.equal(opened.length, 2, "a new connection for the fresh join");
  assert.deepEqual(
    opened.map((s) => s.hellos[0]!.token),
    ["old.1.x", ""],
  );
  assert.equal(JSON.parse(storage.getItem("tickline:game")!).token, "new.7.y");
  assert.ok(!client.isClosed);
});

test("a dropped connection is resumed with the token, the input numbering carried on", async () => {
  const opened: ScriptedServer[] = [];
  const answer = (hello: Hello): Frame[] => [welcome(3, hello.token || "m.3.secret")];
  const client = await connect(scripted(answer, opened, { storage: null }));
  await client.join("alice");
  client.sendControls({ mx: 1 });
  client.sendControls({ mx: 1 });
  const resumed = new Promise<Welcome>((resolve) => {
    client.onReconnect = resolve;
  });
  opened[0]!.drop("network gone");
  const back = await resumed;
  assert.equal(opened[1]!.hellos[0]!.token, "m.3.secret");
  assert.equal(back.player_id, 3);
  assert.equal(client.transport, opened[1]);
  assert.equal(client.sendControls({ mx: 0 }), 3, "the next input is number 3");
  assert.equal(client.stats.reconnects, 1);
  assert.ok(!client.isClosed);
});

test("a goodbye from the server ends the client with its reason, and nothing is resumed", async () => {
  const opened: ScriptedServer[] = [];
  const client = await connect(scripted(() => [welcome(2, "t.2.z")], opened, { storage: null }));
  await client.join("alice");
  const waiting = client.waitUpdate();
  opened[0]!.deliverStream(encodeStream({ t: "ev", tick: 90, kind: "over", data: { winner: 2 } }));
  opened[0]!.deliverStream(encodeStream({ t: "bye", reason: "match over" }));
  assert.equal(await client.closed, "match over");
  assert.equal(await waiting, false);
  assert.deepEqual(client.events, [{ t: "ev", tick: 90, kind: "over", data: { winner: 2 } }]);
  assert.equal(opened.length, 1);
});

test("a server that refuses the hello fails the join with its reason", async () => {
  const opened: ScriptedServer[] = [];
  const client = await connect(scripted(() => [{ t: "bye", reason: "name must be 1 to 32 printable characters" }], opened, { storage: null }));
  await assert.rejects(client.join(""), (exc: unknown) => exc instanceof ClientError && /name must be 1 to 32/.test(exc.message));
  assert.ok(client.isClosed);
});

test("no welcome in time fails the join", async () => {
  const opened: ScriptedServer[] = [];
  const client = await connect(scripted(() => [], opened, { storage: null, welcomeTimeoutMs: 20 }));
  await assert.rejects(client.join("alice"), /no welcome within 0.02 s/);
});

test("a frame the protocol does not allow closes the connection with the reason", async () => {
  const opened: ScriptedServer[] = [];
  const client: GameClient = await connect(scripted(() => [welcome(1, "a.1.b")], opened, { storage: null, reconnectMs: 0 }));
  await client.join("alice");
  opened[0]!.deliverDatagram(new TextEncoder().encode('{"t":"d","tick":1}'));
  assert.match(await client.closed, /bad frame from server: d frame lacks field "base"/);
  const other = await connect(scripted(() => [welcome(1, "a.1.b")], opened, { storage: null, reconnectMs: 0 }));
  await other.join("bob");
  opened[1]!.deliverDatagram(new TextEncoder().encode('{"t":"d","tick":1,"base":0,"seq":0,"diff":{"u":{"x":{}}}}'));
  assert.match(await other.closed, /delta does not apply: delta updates "x", which the base lacks/);
});

test("inputTicks outside 1 to 8 is refused when the client is made", async () => {
  await assert.rejects(connect({ ...URLS, inputTicks: 9, openers: { webtransport: async () => new FakeTransport() } }), /inputTicks must be 1 to 8/);
});

test("discover reads the WebTransport endpoint and certificate hashes from the server's HTTP side", async () => {
  const asked: string[] = [];
  const fetcher = (async (url: URL) => {
    asked.push(String(url));
    const body = { port: 4433, path: "/tickline", hashes: [{ algorithm: "sha-256", value: "ab".repeat(32), status: "current" }] };
    return new Response(JSON.stringify(body), { status: 200 });
  }) as unknown as typeof fetch;
  const found = await discover("https://game.example:8443/lobby/", fetcher);
  assert.deepEqual(asked, ["https://game.example:8443/cert-hashes"]);
  assert.deepEqual(found, {
    webTransport: { url: "https://game.example:4433/tickline", certificateHashes: ["ab".repeat(32)] },
    webSocket: { url: "wss://game.example:8443/ws" },
  });
  const failing = (async () => new Response("no", { status: 404 })) as unknown as typeof fetch;
  await assert.rejects(discover("http://127.0.0.1:9000", failing), /cert-hashes answered HTTP 404/);
});

test("connectToken asks the lobby, waits as a 429 says, and passes a refusal's reason on", async () => {
  const asked: { url: string; body: unknown }[] = [];
  let answers = [
    new Response("too many lobby requests from this address; try again in 0.0 s", { status: 429, headers: { "Retry-After": "0" } }),
    new Response(JSON.stringify({ token: "tok.en", expires: 1 }), { status: 200 }),
  ];
  const fetcher = (async (url: URL, init: RequestInit) => {
    asked.push({ url: String(url), body: JSON.parse(String(init.body)) });
    return answers.shift();
  }) as unknown as typeof fetch;
  assert.equal(await connectToken("http://127.0.0.1:8080/", "alice", "ab12", fetcher), "tok.en");
  assert.deepEqual(asked, [
    { url: "http://127.0.0.1:8080/lobby/token", body: { name: "alice", match: "ab12" } },
    { url: "http://127.0.0.1:8080/lobby/token", body: { name: "alice", match: "ab12" } },
  ]);
  answers = [new Response("name must be 1-32 printable characters\n", { status: 400 })];
  await assert.rejects(connectToken("http://127.0.0.1:8080", "", "", fetcher), /no connect token from .*: name must be 1-32/);
  answers = [new Response("slow down", { status: 429, headers: { "Retry-After": "30" } })];
  await assert.rejects(connectToken("http://127.0.0.1:8080", "bob", "", fetcher, 1000), /slow down/);
  assert.deepEqual(asked.at(-1)?.body, { name: "bob" });
});

test("controls before the welcome are refused: the server would close the connection", async () => {
  const client = await connect({ ...URLS, storage: null, openers: { webtransport: async () => new FakeTransport() } });
  assert.throws(() => client.sendControls({ mx: 1 }), /join a match before sending controls/);
});

test("sendEveryTick keeps to the tick rate whatever the timers round to, and a throttled tab resumes without a burst", async () => {
  let now = 100; // seconds, the client's clock
  const opened: ScriptedServer[] = [];
  const client = await connect(scripted(() => [welcome(3, "t")], opened, { storage: null, clock: () => now }));
  await client.join("alice");
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const sent: number[] = [];
    let n = 0;
    const stop = client.sendEveryTick(() => ({ mx: (n += 1) % 2 }));
    const advance = (ms: number, step: number): void => {
      for (let t = 0; t < ms; t += step) {
        now += step / 1000;
        mock.timers.tick(step);
      }
    };
    advance(10_000, 1); // ten seconds, a millisecond at a time
    sent.push(client.stats.inputsSent);
    assert.ok(Math.abs(sent[0]! - 600) <= 1, `600 inputs in 10 s at 60 Hz, not ${sent[0]}`);
    now += 2; // the tab was in the background for two seconds: its timer did not run
    advance(100, 1);
    const after = client.stats.inputsSent - sent[0]!;
    assert.ok(after <= 6 + 4 + 1, `a tenth of a second's inputs and a few late ones, not ${after}`);
    stop();
    const stopped = client.stats.inputsSent;
    advance(1000, 16);
    assert.equal(client.stats.inputsSent, stopped, "stopped");
  } finally {
    mock.timers.reset();
    client.close();
  }
});
