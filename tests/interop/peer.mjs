// BBS interop peer for tests/test_bbs_interop.py.
// Reads {"ops": [...]} as JSON on stdin, runs each op with
// @digitalbazaar/bbs-signatures and writes {"results": [...]} on stdout.
// Byte strings travel as hex. An op that throws yields {"error": message}.
import * as bbs from '@digitalbazaar/bbs-signatures';

const hex = s => Uint8Array.from(Buffer.from(s ?? '', 'hex'));
const toHex = b => Buffer.from(b).toString('hex');

const handlers = {
  async keypair({ciphersuite, seed}) {
    const {secretKey, publicKey} = await bbs.generateKeyPair({ciphersuite, seed: hex(seed)});
    return {secretKey: toHex(secretKey), publicKey: toHex(publicKey)};
  },
  async sign({ciphersuite, secretKey, publicKey, header, messages}) {
    const signature = await bbs.sign({
      ciphersuite, secretKey: hex(secretKey), publicKey: hex(publicKey),
      header: hex(header), messages: messages.map(hex)
    });
    return {signature: toHex(signature)};
  },
  async verify({ciphersuite, publicKey, signature, header, messages}) {
    const verified = await bbs.verifySignature({
      ciphersuite, publicKey: hex(publicKey), signature: hex(signature),
      header: hex(header), messages: messages.map(hex)
    });
    return {verified};
  },
  async proofGen({ciphersuite, publicKey, signature, header, presentationHeader, messages, disclosedIndexes}) {
    const proof = await bbs.deriveProof({
      ciphersuite, publicKey: hex(publicKey), signature: hex(signature),
      header: hex(header), presentationHeader: hex(presentationHeader),
      messages: messages.map(hex), disclosedMessageIndexes: disclosedIndexes
    });
    return {proof: toHex(proof)};
  },
  async proofVerify({ciphersuite, publicKey, proof, header, presentationHeader, disclosedMessages, disclosedIndexes}) {
    const verified = await bbs.verifyProof({
      ciphersuite, publicKey: hex(publicKey), proof: hex(proof),
      header: hex(header), presentationHeader: hex(presentationHeader),
      disclosedMessages: disclosedMessages.map(hex), disclosedMessageIndexes: disclosedIndexes
    });
    return {verified};
  }
};

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  const {ops} = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const results = [];
  for(const op of ops) {
    const handler = handlers[op.op];
    try {
      if(!handler) {
        throw new Error(`unknown op "${op.op}"`);
      }
      results.push(await handler(op));
    } catch(e) {
      results.push({error: String(e?.message ?? e)});
    }
  }
  process.stdout.write(JSON.stringify({results}));
}

main().catch(e => {
  process.stderr.write(String(e?.stack ?? e) + '\n');
  process.exit(1);
});
