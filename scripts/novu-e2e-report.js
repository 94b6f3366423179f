#!/usr/bin/env node
// The table and verdict of scripts/novu-e2e.sh, from what it recorded in its work directory:
// plan.json (upstep plan --json), run1.jsonl / run2.jsonl (JSON events, each line prefixed by
// its arrival time in epoch ms), rss.log (epoch ms, kB of upstep's whole process tree),
// disk.log (tag, bytes of its worktree after setup), promises.txt (novu_seed check),
// stand-in-tags. Exit 0 only when every check passed.
'use strict';
const fs = require('fs');
const path = require('path');

const [work, from, to, run1Rc, run1Secs, statusRc, run2Rc, checkRc] = process.argv.slice(2);
const read = (name) => {
  try { return fs.readFileSync(path.join(work, name), 'utf8'); } catch { return ''; }
};
const events = (name) => read(name).split('\n').filter(Boolean).map((line) => {
  const space = line.indexOf(' ');
  try { return { at: Number(line.slice(0, space)), ...JSON.parse(line.slice(space + 1)) }; } catch { return null; }
}).filter(Boolean);

let plan = null;
try { plan = JSON.parse(read('plan.json')); } catch { /* reported below */ }
const run1 = events('run1.jsonl');
const run2 = events('run2.jsonl');
const rss = read('rss.log').split('\n').filter(Boolean).map((l) => l.split(' ').map(Number));
const disk = Object.fromEntries(read('disk.log').split('\n').filter(Boolean).map((l) => l.split(' ')));
const allStandIns = read('stand-in-tags').split('\n').filter(Boolean);
const secs = (ms) => (ms / 1000).toFixed(1);
const gb = (bytes) => (bytes ? (Number(bytes) / 1e9).toFixed(2) + ' GB' : '-');

// Setup per tag: each command runs from its `running` event to the next setup event of the tag.
const tags = new Map();
const tagOf = (ref) => {
  if (!tags.has(ref)) tags.set(ref, { ref, commands: [], status: '', node: '' });
  return tags.get(ref);
};
for (const [n, e] of run1.entries()) {
  if (e.event === 'notice') {
    const m = /^(\S+): node (\S+) from (.*)$/.exec(e.message);
    if (m) tagOf(m[1]).node = m[2];
  }
  if (e.event !== 'setup') continue;
  const tag = tagOf(e.git_ref);
  if (e.status === 'running') {
    const next = run1.slice(n + 1).find((x) => (x.event === 'setup' && x.git_ref === e.git_ref) || x.event === 'step-started' || x.event === 'summary');
    tag.commands.push({ command: e.detail, secs: next ? secs(next.at - e.at) : '?', ended: next ? next.status || next.event : 'never' });
  } else if (e.status !== 'output') {
    tag.status = e.status;
    // "the data-layer setup profile (log: ...)" or "the full setup (log: ...)".
    const m = /^the (\S+) setup profile/.exec(e.detail || '');
    if (e.status === 'done' || e.status === 'cached') tag.profile = m ? m[1] : null;
  }
}

// Steps: started -> verification -> finished.
const steps = [];
for (const e of run1) {
  if (e.event === 'step-started') steps.push({ id: e.id, ref: e.git_ref, runsAs: e.runs_as, start: e.at });
  const step = steps.find((s) => s.id === e.id);
  if (!step) continue;
  if (e.event === 'verification') step.verified = e.state;
  if (e.event === 'step-finished') Object.assign(step, { status: e.status, endedBy: e.ended_by, ms: e.duration_ms, end: e.at });
}
for (const s of steps) {
  const inside = rss.filter(([at]) => at >= s.start && at <= (s.end || Infinity)).map(([, kb]) => kb);
  s.peak = inside.length ? (Math.max(...inside) / 1024).toFixed(0) + ' MB' : '-';
}

const groups = plan ? plan.groups : [];
// The tags of this plan that ran with a stand-in (the copy gives every affected tag one).
const standIns = allStandIns.filter((t) => groups.some((g) => g.git_ref === t));
// The profile the run used (a tag whose other steps were skipped may need less than the plan).
const profileOf = (g) => (tags.has(g.git_ref) && tags.get(g.git_ref).profile !== undefined ? tags.get(g.git_ref).profile : g.setup_profile);
const installedStandIns = standIns.filter((t) => groups.some((g) => g.git_ref === t && !profileOf(g)));
const out = [];
out.push(`# novu-e2e v${from} -> v${to}`);
out.push('');
out.push(installedStandIns.length
  ? `Tags installed with npm stand-ins for GitHub-hosted packages (see scripts/novu-e2e.sh): ${installedStandIns.join(', ')}`
  : 'No stand-ins: every tag installed from its real lockfile.');
out.push('');
out.push('| tag | node | pnpm | setup | commands (seconds) | disk |');
out.push('|---|---|---|---|---|---|');
for (const g of groups) {
  const t = tags.get(g.git_ref) || { commands: [], status: 'not reached', node: '' };
  const cmds = t.commands.map((c) => `\`${c.command}\` ${c.secs}`).join('<br>') || '-';
  // A setup profile (data-layer) installs no push provider: the stand-in was not installed.
  const profile = profileOf(g);
  const mark = !standIns.includes(g.git_ref) ? '' : profile ? ` (${profile} setup: no stand-in needed)` : ' (stand-in)';
  out.push(`| ${g.git_ref}${mark} | ${t.node || g.node} | ${g.pnpm || '-'} | ${t.status || '-'} | ${cmds} | ${gb(disk[g.git_ref])} |`);
}
out.push('');
out.push('| step | tag | runs as | status | ended by | seconds | peak RSS | verified |');
out.push('|---|---|---|---|---|---|---|---|');
for (const s of steps) {
  out.push(`| ${s.id} | ${s.ref} | ${s.runsAs} | ${s.status || 'unfinished'} | ${s.endedBy || '-'} | ${s.ms != null ? secs(s.ms) : '-'} | ${s.peak} | ${s.verified || '-'} |`);
}

// The verdict.
const checks = [];
const check = (what, ok, detail = '') => checks.push({ what, ok, detail });
const planned = (run1.find((e) => e.event === 'plan') || { steps: [] }).steps.filter((s) => s.action === 'run');
const summary1 = run1.find((e) => e.event === 'summary');
const summary2 = run2.find((e) => e.event === 'summary');
check('upstep plan --repo succeeded', plan !== null, read('plan.stderr').trim());
check('first run exited 0', run1Rc === '0', `exit ${run1Rc}; ${read('run1.stderr').trim().split('\n').slice(-3).join(' / ')}`);
check(`every planned step ran (${planned.length})`, planned.every((p) => steps.some((s) => s.id === p.id)),
  planned.filter((p) => !steps.some((s) => s.id === p.id)).map((p) => p.id).join(', '));
// A step the map gives no data check (preference-centralization) cannot be verified by one:
// it must have succeeded, and the seed's promises say whether it did its work.
const unchecked = new Set(plan ? plan.groups.flatMap((g) => g.steps).filter((s) => !s.has_fingerprint).map((s) => s.id) : []);
const verifiedOk = (s) => ['applied', 'notapplicable', 'not-applicable'].includes(s.verified) || unchecked.has(s.id);
check('every step succeeded and was verified by its data check' + (unchecked.size ? ` (no data check, promises only: ${[...unchecked].join(', ')})` : ''),
  planned.length === steps.length && steps.every((s) => s.status === 'succeeded' && verifiedOk(s)),
  steps.filter((s) => s.status !== 'succeeded' || !verifiedOk(s)).map((s) => `${s.id}: ${s.status}/${s.verified}`).join(', '));
check('upstep status --check exited 0', statusRc === '0', `exit ${statusRc}; ` + read('status.txt').trim().split('\n').slice(-3).join(' / '));
check('a second run ran nothing', run2Rc === '0' && summary2 && summary2.ran === 0, `exit ${run2Rc}, ran ${summary2 ? summary2.ran : '?'}`);
check('the data says what each script promises', checkRc === '0', read('promises.txt').split('\n').filter((l) => l.startsWith('FAILED')).join(' / '));
out.push('');
out.push(`Wall time of the upgrade: ${run1Secs} s (${(run1Secs / 60).toFixed(1)} min); steps: ${steps.length}` +
  (summary1 ? `; summary: ran ${summary1.ran}, succeeded ${summary1.succeeded}, skipped ${summary1.skipped}, failed ${summary1.failed}` : ''));
out.push('');
for (const c of checks) out.push(`${c.ok ? 'PASS' : 'FAIL'}  ${c.what}${c.ok || !c.detail ? '' : `: ${c.detail}`}`);
out.push('');
out.push('Promises (novu_seed check):');
out.push(read('promises.txt').trimEnd());
console.log(out.join('\n'));
process.exit(checks.every((c) => c.ok) ? 0 : 1);
