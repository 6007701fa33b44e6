// A game server that knows Agones only: its official Node.js SDK, nothing of Changeover.
// Usage: node game.js PORT. Players connect over TCP and send one line, their name; the
// server answers "welcome NAME" and reports them with the SDK's player tracking until they
// hang up. Every GameServer the watch stream brings is printed as one JSON line
// ("watch": state, labels, annotations), so a test can follow it in the log.
"use strict";
const net = require("node:net");
const AgonesSDK = require("@google-cloud/agones-sdk");

const port = Number(process.argv[2]);
const sdk = new AgonesSDK();
let shuttingDown = false;

function log(obj) {
	process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function main() {
	await sdk.connect();
	const server = net.createServer((sock) => {
		let name = null;
		let buf = "";
		sock.setEncoding("utf8");
		sock.on("data", async (chunk) => {
			buf += chunk;
			const nl = buf.indexOf("\n");
			if (name !== null || nl < 0) return;
			name = buf.slice(0, nl).trim();
			try {
				await sdk.alpha.playerConnect(name);
				sock.write(`welcome ${name}\n`);
			} catch (e) {
				sock.end(`refused ${e.message}\n`);
			}
		});
		sock.on("close", () => {
			if (name !== null) sdk.alpha.playerDisconnect(name).catch(() => {});
		});
		sock.on("error", () => {});
	});
	await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));

	sdk.watchGameServer(
		(gs) => {
			const meta = gs.objectMeta;
			log({
				watch: gs.status.state,
				uid: meta.uid,
				labels: Object.fromEntries(meta.labelsMap),
				annotations: Object.fromEntries(meta.annotationsMap),
			});
			// Changeover's shutdown notice: save, then tell the SDK we are done.
			if (gs.status.state === "Shutdown" && !shuttingDown) {
				shuttingDown = true;
				log({ saved: true });
				sdk.shutdown().catch(() => {});
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
}

process.on("SIGTERM", () => {
	log({ sigterm: true });
	sdk.close();
	process.exit(0);
});

main().catch((e) => {
	log({ error: String(e) });
	process.exit(1);
});
