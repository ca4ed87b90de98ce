/**
 * Run the JS unit tests in node (20+), from the repository root:
 *
 *     node --experimental-default-type=module tests/js/run-node.mjs
 *
 * Prints one line per test and a summary; exits 1 on a failure or when no test ran.
 * Tests that need a browser (IndexedDB) are reported as skipped; they run in
 * tests/js/index.html.
 */
import "./all.js";
import { run } from "./harness.js";

const summary = await run({
  onResult({ name, ok, skipped, error }) {
    if (skipped) console.log(`skip  ${name} (${error})`);
    else if (ok) console.log(`ok    ${name}`);
    else console.log(`FAIL  ${name}\n${indent(error ?? "")}`);
  },
});

const { passed, failed, skipped } = summary;
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exitCode = failed > 0 || passed === 0 ? 1 : 0;

/** @param {string} text */
function indent(text) {
  return text
    .split("\n")
    .map((line) => `      ${line}`)
    .join("\n");
}
