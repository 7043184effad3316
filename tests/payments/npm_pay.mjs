#!/usr/bin/env node
// Pays an x402 endpoint with the official npm client (@x402/fetch + @x402/evm's "exact" scheme,
// EIP-3009 signed with viem), for the interoperability test tests/payments/test_npm_client.py.
//
// Usage: node npm_pay.mjs --url URL [--key 0x..] [--rpc-url URL] [--chain-id N]
//                         [--asset 0x.. [--max-amount N]] [--method POST] [--body JSON]
// Each option may come from the environment instead: X402_URL, X402_PAYER_KEY (preferred for
// the key: argv is visible to other users in `ps`), X402_RPC_URL, X402_CHAIN_ID, X402_ASSET,
// X402_MAX_AMOUNT, X402_METHOD, X402_BODY.
// The client's spend controls stay on: by default it pays only assets it knows (USDC and the
// like), so a chain's own token must be named with --asset (needs --chain-id), optionally capped
// per payment at --max-amount base units; anything else is refused before signing. The packages are loaded from the project-local tools folder (.tools/, installed by
// `./scripts/setup.sh --tests`), found by walking up from this file, or from $X402_NODE_TOOLS.
//
// Prints one JSON object on stdout:
//   {status, body, payment_response, payment_signature, statuses}
// status/body are the final response's (body parsed as JSON when it is JSON), payment_response
// the decoded PAYMENT-RESPONSE header (null when absent), payment_signature the PAYMENT-SIGNATURE
// header the client sent (null when it never paid; the test replays it), statuses every HTTP
// status seen in order (an unpaid 402 first, then the paid answer). Exit 0 whenever a response
// came back, whatever its status; 2 for bad arguments; 1 when the client itself failed (the
// JSON then carries {error}).
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const OPTIONS = {
  url: "X402_URL",
  key: "X402_PAYER_KEY",
  "rpc-url": "X402_RPC_URL",
  "chain-id": "X402_CHAIN_ID",
  asset: "X402_ASSET",
  "max-amount": "X402_MAX_AMOUNT",
  method: "X402_METHOD",
  body: "X402_BODY",
};

function fail(message) {
  process.stderr.write(`npm_pay: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const values = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) fail(`unexpected argument ${JSON.stringify(arg)}`);
    let name = arg.slice(2);
    let value;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else {
      if (i + 1 >= argv.length) fail(`--${name} needs a value`);
      value = argv[++i];
    }
    if (!(name in OPTIONS)) fail(`unknown option --${name} (known: ${Object.keys(OPTIONS).join(", ")})`);
    values[name] = value;
  }
  for (const [name, env] of Object.entries(OPTIONS)) {
    if (values[name] === undefined && process.env[env]) values[name] = process.env[env];
  }
  if (!values.url) fail("no URL: pass --url or set X402_URL");
  try {
    new URL(values.url);
  } catch {
    fail(`--url ${JSON.stringify(values.url)} is not a URL`);
  }
  if (!values.key) fail("no payer key: set X402_PAYER_KEY or pass --key");
  if (!/^0x[0-9a-fA-F]{64}$/.test(values.key)) fail("the payer key must be 0x and 64 hex digits");
  if (values["chain-id"] !== undefined && !/^[1-9][0-9]*$/.test(values["chain-id"])) {
    fail(`--chain-id ${JSON.stringify(values["chain-id"])} is not a positive integer`);
  }
  if (values.asset !== undefined) {
    if (!/^0x[0-9a-fA-F]{40}$/.test(values.asset)) fail("--asset must be a 0x address (40 hex digits)");
    if (values["chain-id"] === undefined) fail("--asset needs --chain-id (it is allowed on eip155:<chain id>)");
  }
  if (values["max-amount"] !== undefined) {
    if (values.asset === undefined) fail("--max-amount caps an --asset: pass --asset too");
    if (!/^[0-9]+$/.test(values["max-amount"])) fail("--max-amount must be a whole number of base units");
  }
  values.method = (values.method || (values.body !== undefined ? "POST" : "GET")).toUpperCase();
  if (values.body !== undefined) {
    try {
      JSON.parse(values.body);
    } catch {
      fail("--body is not valid JSON");
    }
  }
  return values;
}

/** A require() rooted at the tools folder, so the packages resolve from .tools/node_modules. */
function toolsRequire() {
  const candidates = [];
  if (process.env.X402_NODE_TOOLS) candidates.push(resolve(process.env.X402_NODE_TOOLS));
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    candidates.push(join(dir, ".tools"));
    if (dirname(dir) === dir) break;
  }
  for (const tools of candidates) {
    if (existsSync(join(tools, "node_modules", "@x402", "fetch", "package.json"))) {
      return createRequire(join(tools, "package.json"));
    }
  }
  process.stderr.write(
    "npm_pay: @x402/fetch not found in .tools/node_modules: run `./scripts/setup.sh --tests`\n",
  );
  process.exit(3);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const require = toolsRequire();
  const { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } = require("@x402/fetch");
  const { ExactEvmScheme } = require("@x402/evm/exact/client");
  const { toClientEvmSigner } = require("@x402/evm");
  const { createPublicClient, defineChain, http } = require("viem");
  const { privateKeyToAccount } = require("viem/accounts");

  const account = privateKeyToAccount(args.key);
  let signer = account;
  const client = new x402Client();
  if (args["rpc-url"] && args["chain-id"]) {
    // A chain of our own (anvil): viem knows it only by what we tell it.
    const chainId = Number(args["chain-id"]);
    const chain = defineChain({
      id: chainId,
      name: `eip155:${chainId}`,
      nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
      rpcUrls: { default: { http: [args["rpc-url"]] } },
    });
    const publicClient = createPublicClient({ chain, transport: http(args["rpc-url"]) });
    signer = toClientEvmSigner(account, publicClient);
    client.register(`eip155:${chainId}`, new ExactEvmScheme(signer, { rpcUrl: args["rpc-url"] }));
  } else {
    // No chain given: sign for whatever eip155 network the server asks (signing needs no RPC).
    client.register("eip155:*", new ExactEvmScheme(signer));
  }

  if (args.asset !== undefined) {
    const allowed = { network: `eip155:${args["chain-id"]}`, asset: args.asset };
    if (args["max-amount"] !== undefined) allowed.maxAmountPerPayment = args["max-amount"];
    client.setSpendControls({ allowedAssets: [allowed] });
  }

  const statuses = [];
  let paymentSignature = null;
  const recordingFetch = async (request) => {
    const sent = request.headers.get("PAYMENT-SIGNATURE");
    if (sent) paymentSignature = sent;
    const response = await fetch(request);
    statuses.push(response.status);
    return response;
  };
  const pay = wrapFetchWithPayment(recordingFetch, client);
  const init = { method: args.method, headers: {} };
  if (args.body !== undefined) {
    init.body = args.body;
    init.headers["Content-Type"] = "application/json";
  }

  let response;
  try {
    response = await pay(args.url, init);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stdout.write(`${JSON.stringify({ error: message, statuses, payment_signature: paymentSignature })}\n`);
    process.exit(1);
  }
  const text = await response.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  const header = response.headers.get("PAYMENT-RESPONSE") || response.headers.get("X-PAYMENT-RESPONSE");
  let paymentResponse = null;
  if (header) {
    try {
      paymentResponse = decodePaymentResponseHeader(header);
    } catch (error) {
      paymentResponse = { undecodable: header, error: String(error) };
    }
  }
  process.stdout.write(
    `${JSON.stringify({
      status: response.status,
      body,
      payment_response: paymentResponse,
      payment_signature: paymentSignature,
      statuses,
    })}\n`,
  );
}

main().catch((error) => {
  process.stderr.write(`npm_pay: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
