// SPDX-License-Identifier: MIT
//
// oracle.mjs -- expected token ids and decoded text from the Hugging Face tokenizers library's
// JavaScript port (@huggingface/tokenizers), for tests/tokenizer/check.sh. No network: the
// tokenizer is built from local tokenizer.json (+ tokenizer_config.json) objects.
//
//   node oracle.mjs TOKENIZER_DIR CORPUS_DIR OUT_FILE
//
// Each corpus file is one case, read as bytes and turned into a string by a UTF-8 decoder that
// replaces invalid sequences with U+FFFD (maximal subparts) and keeps a byte order mark: the
// string HF would be given. Lines written (ids in decimal, text as hex of its UTF-8 bytes):
//   E NAME ADD_SPECIAL IDS...        encode(text, {add_special_tokens})
//   D NAME SKIP_SPECIAL HEX          decode(encode(text, add_special_tokens=true).ids, ...)
//   R NAME 0|1 HEX                   whether decode(encode(text, add_special_tokens=false)) == text,
//                                    and the text (after the UTF-8 repair)
//
// One correction: the port's ByteFallback decoder turns a byte run into text with a default
// TextDecoder, which drops a leading U+FEFF and replaces invalid bytes per maximal subpart. The
// Rust library (decoders/byte_fallback.rs) keeps the BOM and, when the run is not valid UTF-8,
// gives one U+FFFD per byte piece (minicpm4.md §6.3). The reference is the Rust library, so the
// oracle's ByteFallback is replaced by that rule below; every other step is the port's own.
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [tokDir, corpusDir, outFile] = process.argv.slice(2);
if (!outFile) {
  console.error("usage: node oracle.mjs TOKENIZER_DIR CORPUS_DIR OUT_FILE");
  process.exit(2);
}
const tj = JSON.parse(fs.readFileSync(path.join(tokDir, "tokenizer.json"), "utf8"));
const cfgPath = path.join(tokDir, "tokenizer_config.json");
const tc = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
const tok = new Tokenizer(tj, tc);

const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const rustByteFallback = (tokens) => {
  const out = [];
  let run = [];
  const flush = () => {
    if (!run.length) return;
    try {
      out.push(strict.decode(Uint8Array.from(run)));
    } catch {
      for (let i = 0; i < run.length; i++) out.push("\uFFFD");
    }
    run = [];
  };
  for (const t of tokens) {
    const b = t.length === 6 && t.startsWith("<0x") && t.endsWith(">") ? parseInt(t.slice(3, 5), 16) : NaN;
    if (!Number.isNaN(b)) run.push(b);
    else {
      flush();
      out.push(t);
    }
  }
  flush();
  return out;
};
for (const d of [tok.decoder, ...(tok.decoder?.decoders ?? [])])
  if (d && d.constructor.name.startsWith("ByteFallback")) d.decode_chain = rustByteFallback;
const utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const hex = (s) => Buffer.from(s, "utf8").toString("hex");

const lines = [];
for (const name of fs.readdirSync(corpusDir).sort()) {
  const text = utf8.decode(fs.readFileSync(path.join(corpusDir, name)));
  for (const add of [1, 0]) {
    const ids = tok.encode(text, { add_special_tokens: !!add }).ids;
    lines.push(`E ${name} ${add}${ids.length ? " " + ids.join(" ") : ""}`);
  }
  const ids = tok.encode(text, { add_special_tokens: true }).ids;
  for (const skip of [0, 1]) {
    const dec = ids.length ? tok.decode(ids, { skip_special_tokens: !!skip, clean_up_tokenization_spaces: false }) : "";
    lines.push(`D ${name} ${skip} ${hex(dec)}`);
  }
  const plain = tok.encode(text, { add_special_tokens: false }).ids;
  const back = plain.length ? tok.decode(plain, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "";
  lines.push(`R ${name} ${back === text ? 1 : 0} ${hex(text)}`);
}
fs.writeFileSync(outFile, lines.join("\n") + "\n");
