// btlog explorer: progressive enhancement only. On an entry page, checks the entry's
// inclusion proof in the browser: fetches the latest checkpoint and the proof from this
// server's API, recomputes the RFC 6962 root with WebCrypto SHA-256 from the entry text
// shown in the page, and says "verified" or "FAILED" in #proof-status.
"use strict";

(function () {
  const section = document.getElementById("proof");
  const status = document.getElementById("proof-status");
  const textEl = document.getElementById("entry-text");
  if (!section || !status || !textEl) return;

  function show(ok, message) {
    status.textContent = message;
    status.className = "status " + (ok ? "ok" : "failed");
  }

  function b64(s) {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function sha256(...parts) {
    let len = 0;
    for (const p of parts) len += p.length;
    const buf = new Uint8Array(len);
    let off = 0;
    for (const p of parts) { buf.set(p, off); off += p.length; }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  }

  const ZERO = new Uint8Array([0]);
  const ONE = new Uint8Array([1]);

  // RFC 9162 §2.1.3.2: the root from a leaf hash, its index, the tree size and audit path.
  async function rootFromProof(leaf, index, size, path) {
    if (index >= size) throw new Error("index not below tree size");
    let fn = index;
    let sn = size - 1n;
    let r = leaf;
    for (const p of path) {
      if (sn === 0n) throw new Error("audit path too long");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await sha256(ONE, p, r);
        if ((fn & 1n) === 0n) {
          while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
        }
      } else {
        r = await sha256(ONE, r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new Error("audit path too short");
    return r;
  }

  function equal(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  async function check() {
    status.textContent = "Checking…";
    status.className = "status pending";
    const index = BigInt(section.dataset.index);
    const note = await (await fetch("/checkpoint", { cache: "no-store" })).text();
    const lines = note.split("\n");
    const size = BigInt(lines[1]);
    const root = b64(lines[2]);
    const resp = await fetch(`/v1/proof/inclusion?index=${index}&size=${size}`, { cache: "no-store" });
    if (!resp.ok) throw new Error(`proof request answered ${resp.status}`);
    const proof = await resp.json();
    const entry = new TextEncoder().encode(textEl.textContent);
    const leaf = await sha256(ZERO, entry);
    if (!equal(leaf, b64(proof.leaf_hash))) {
      show(false, "FAILED: the entry text does not hash to the log's leaf hash");
      return;
    }
    const computed = await rootFromProof(leaf, index, size, proof.proof.map(b64));
    if (equal(computed, root)) {
      show(true, `verified: entry ${index} is in the tree of ${size} entries with root ${hex(root)}`);
    } else {
      show(false, `FAILED: the proof gives root ${hex(computed)}, the checkpoint says ${hex(root)}`);
    }
  }

  if (!window.crypto || !crypto.subtle) {
    show(false, "Not checked: this browser offers no WebCrypto here (it needs a secure context such as localhost or https)");
    return;
  }
  check().catch((e) => show(false, "FAILED: " + e.message));
})();
