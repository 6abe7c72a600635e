// Merkle interop peer for tests/test_merkle_interop.py.
// Reads {"cases": [{"types": [...], "values": [[...], ...]}]} as JSON on stdin, builds each
// case with @openzeppelin/merkle-tree's StandardMerkleTree and writes
// {"results": [{"root", "leaves", "proofs"}]} on stdout: the root, and each value's leaf hash
// and proof, in the order the values were given. Bytes travel as 0x-hex, integers as decimal strings.
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { cases } = JSON.parse(Buffer.concat(chunks).toString('utf8'));

const results = cases.map(({ types, values }) => {
  const tree = StandardMerkleTree.of(values, types);
  return {
    root: tree.root,
    leaves: values.map(v => tree.leafHash(v)),
    proofs: values.map((_, i) => tree.getProof(i)),
  };
});
process.stdout.write(JSON.stringify({ results }));
