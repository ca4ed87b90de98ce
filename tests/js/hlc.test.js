import { Clock, compareClocks, parseClock } from "../../syncapp/static/syncapp/hlc.js";
import { eq, ok, test } from "./harness.js";

const T = 1_764_000_000_000;

test("Clock: a stamp is '<wall ms>:<counter>' from the physical clock", () => {
  const clock = new Clock({ now: () => T });
  eq(clock.tick(), `${T}:0`);
});

test("Clock: with frozen time the counter makes stamps strictly increase", () => {
  const clock = new Clock({ now: () => T });
  const stamps = Array.from({ length: 5 }, () => clock.tick());
  eq(stamps, [0, 1, 2, 3, 4].map((n) => `${T}:${n}`));
});

test("Clock: a later physical time resets the counter", () => {
  let now = T;
  const clock = new Clock({ now: () => now });
  clock.tick();
  clock.tick();
  now = T + 5;
  eq(clock.tick(), `${T + 5}:0`);
});

test("Clock: a physical clock going back does not make stamps go back", () => {
  let now = T;
  const clock = new Clock({ now: () => now });
  eq(clock.tick(), `${T}:0`);
  now = T - 1000;
  eq(clock.tick(), `${T}:1`);
  eq(clock.tick(), `${T}:2`);
});

test("Clock: fractional milliseconds are floored", () => {
  const clock = new Clock({ now: () => T + 0.75 });
  eq(clock.tick(), `${T}:0`);
});

test("Clock: observe() of a future remote makes the next stamps order after it", () => {
  const clock = new Clock({ now: () => T });
  clock.tick();
  eq(clock.observe(`${T + 60000}:7`), true);
  eq(clock.tick(), `${T + 60000}:8`);
  eq(clock.tick(), `${T + 60000}:9`);
});

test("Clock: observe() of an older remote changes nothing", () => {
  const clock = new Clock({ now: () => T });
  clock.tick();
  clock.tick();
  eq(clock.observe(`${T}:0`), true);
  eq(clock.observe(`${T - 5}:99`), true);
  eq(clock.tick(), `${T}:2`);
});

test("Clock: observe() of the same wall with a higher counter moves the counter", () => {
  const clock = new Clock({ now: () => T });
  clock.tick();
  clock.observe(`${T}:41`);
  eq(clock.tick(), `${T}:42`);
});

test("Clock: observe() ignores what is not a clock", () => {
  const clock = new Clock({ now: () => T });
  for (const bad of [null, undefined, 12, "", "abc", "1:2:3", "-1:0", "1.5:0", `${T}:`, ":3",
    "1234567890123456:0", "1:1234567890", { wall: 1 }]) {
    eq(clock.observe(bad), false, String(bad));
  }
  eq(clock.tick(), `${T}:0`);
});

test("Clock: the counter borrows the next millisecond when it runs out", () => {
  const clock = new Clock({ now: () => T });
  clock.observe(`${T}:999999999`);
  eq(clock.tick(), `${T + 1}:0`);
});

test("Clock: defaults to Date.now", () => {
  const before = Date.now();
  const [wall] = parseClock(new Clock().tick()) ?? [0];
  ok(wall >= before && wall <= Date.now());
});

test("parseClock and compareClocks", () => {
  eq(parseClock("12:3"), [12, 3]);
  eq(parseClock("12:x"), null);
  ok(compareClocks(`${T}:1`, `${T}:2`) < 0);
  ok(compareClocks(`${T + 1}:0`, `${T}:999`) > 0);
  eq(compareClocks(`${T}:5`, `${T}:5`), 0);
  eq(["9:0", "10:0", "9:10", "9:2"].sort(compareClocks), ["9:0", "9:2", "9:10", "10:0"]);
});

test("Clock.observeTime: a stamp after the server time of an op seen, with a clock behind", () => {
  const clock = new Clock({ now: () => T - 3_600_000 }); // an hour behind
  ok(clock.observeTime(new Date(T).toISOString()));
  const stamp = clock.tick();
  ok(compareClocks(stamp, `${T}:999999999`) > 0, stamp);
  ok(compareClocks(clock.tick(), stamp) > 0);
  ok(clock.observeTime("2026-11-24T15:04:05.123456Z"), "microseconds, as the server sends them");
  for (const bad of ["", "yesterday", null, -1, Number.NaN, 10 ** 16]) ok(!clock.observeTime(bad), String(bad));
});
