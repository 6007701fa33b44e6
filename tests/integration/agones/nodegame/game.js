// A game server that knows Agones only: its official Node.js SDK, nothing of Changeover.
// Usage: node game.js PORT.
//
// Players speak the sample arena's line protocol (JSON, one object a line, what
// `changeover bots` plays): {"hello": NAME, "session": ID} → {"welcome": NAME}, then
// {"score": N} → {"score": TOTAL}. Each is reported with the SDK's player tracking while
// connected. When the GameServer turns Shutdown with a shutdown deadline annotation (the
// host's notice that this server is going away), every player is told
// {"notice": {"reason", "deadline"}} so it can move, and once no player is left the game
// calls Shutdown. Every GameServer the watch stream brings is printed as one JSON line, so
// a test can follow it in the log. With COUNTS=1 it also plays with Agones' beta counters
// and lists (counter "rooms", list "party", which its profile declares) and logs what the
// SDK answered.
"use strict";
const net = require("node:net");
const AgonesSDK = require("@google-cloud/agones-sdk");

const port = Number(process.argv[2]);
const sdk = new AgonesSDK();
const players = new Map(); // name -> socket
let notice = null;
let shutdownCalled = false;

function log(obj) {
	process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function send(sock, obj) {
	sock.write(`${JSON.stringify(obj)}\n`);
}

function shutdownWhenEmpty() {
	if (notice !== null && players.size === 0 && !shutdownCalled) {
		shutdownCalled = true;
		log({ saved: true });
		sdk.shutdown().catch((e) => log({ shutdownError: e.code }));
	}
}

function serve(sock) {
	let name = null;
	let total = 0;
	let buf = "";
	sock.setEncoding("utf8");
	sock.on("data", async (chunk) => {
		buf += chunk;
		let nl = buf.indexOf("\n");
		while (nl >= 0) {
			const line = buf.slice(0, nl);
			buf = buf.slice(nl + 1);
			nl = buf.indexOf("\n");
			let msg;
			try {
				msg = JSON.parse(line);
			} catch {
				send(sock, { error: "not JSON" });
				continue;
			}
			if (msg.hello !== undefined && name === null) {
				name = String(msg.hello);
				try {
					await sdk.alpha.playerConnect(name);
				} catch (e) {
					send(sock, { error: `refused: ${e.message}` });
					sock.end();
					return;
				}
				players.set(name, sock);
				send(sock, { welcome: name });
				if (notice !== null) send(sock, { notice });
			} else if (msg.score !== undefined) {
				total += Number(msg.score) || 0;
				send(sock, { score: total });
			}
		}
	});
	sock.on("close", () => {
		if (name !== null && players.get(name) === sock) {
			players.delete(name);
			sdk.alpha
				.playerDisconnect(name)
				.catch(() => {})
				.finally(shutdownWhenEmpty);
		}
	});
	sock.on("error", () => {});
}

async function main() {
	await sdk.connect();
	const server = net.createServer(serve);
	await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));

	sdk.watchGameServer(
		(gs) => {
			const meta = gs.objectMeta;
			const annotations = Object.fromEntries(meta.annotationsMap);
			log({
				watch: gs.status.state,
				uid: meta.uid,
				labels: Object.fromEntries(meta.labelsMap),
				annotations,
				counters: Object.fromEntries(gs.status.countersMap),
				lists: Object.fromEntries(gs.status.listsMap),
			});
			const deadline = annotations["changeover.dev/shutdown-deadline-unix"];
			if (gs.status.state === "Shutdown" && deadline !== undefined) {
				notice = {
					reason: annotations["changeover.dev/shutdown-reason"],
					deadline: Number(deadline),
				};
				for (const sock of players.values()) send(sock, { notice });
				shutdownWhenEmpty();
			}
		},
		(err) => log({ watchError: err.code }),
	);
	await sdk.setLabel("mode", "ranked");
	await sdk.ready();
	sdk.health();
	setInterval(() => sdk.health((e) => log({ healthError: e.code })), 300);
	const gs = await sdk.getGameServer();
	log({ ready: gs.status.state, name: gs.objectMeta.name });
	if (process.env.COUNTS === "1") await counts();
}

async function refused(what, call) {
	try {
		await call();
		log({ countsError: what, code: 0 });
	} catch (e) {
		log({ countsError: what, code: e.code });
	}
}

async function counts() {
	const b = sdk.beta;
	await b.incrementCounter("rooms", 2);
	await refused("decrement-too-far", () => b.decrementCounter("rooms", 5));
	await refused("unknown-counter", () => b.getCounterCount("nope"));
	await b.appendListValue("party", "ann");
	await refused("append-again", () => b.appendListValue("party", "ann"));
	await b.setListCapacity("party", 3);
	log({
		counts: {
			rooms: await b.getCounterCount("rooms"),
			roomsCapacity: await b.getCounterCapacity("rooms"),
			party: await b.getListValues("party"),
			partyCapacity: await b.getListCapacity("party"),
			hasAnn: await b.listContains("party", "ann"),
		},
	});
}

process.on("SIGTERM", () => {
	log({ sigterm: true, players: players.size });
	sdk.close();
	process.exit(0);
});

main().catch((e) => {
	log({ error: String(e) });
	process.exit(1);
});
