// shipmap studio: the page. It talks only to the studio's own JSON API, with the token from its URL.
"use strict";

(function () {
  const token = new URLSearchParams(location.search).get("token") || "";
  const $ = (selector) => document.querySelector(selector);
  const DEBOUNCE_MS = 300;
  // The server answers every call within 30 s (or says why not); past this the page stops waiting.
  const ANSWER_DEADLINE_MS = 40000;
  const PASTED = "";

  const state = {
    schema: null,
    mappingFile: null,
    savedText: null,
    sampleFile: null, // a file of the directory, or null for pasted/dropped text
    sampleName: "pasted",
    index: 0,
    sequence: 0,
    sampleError: null, // why the picked sample file could not be read (shown until another sample is chosen)
    timer: null,
    last: null,
  };

  function escapeHtml(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  async function api(path, options) {
    const init = Object.assign({ headers: {} }, options || {});
    init.headers["X-Shipmap-Token"] = token;
    if (init.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(init.json);
    }
    init.signal = AbortSignal.timeout(ANSWER_DEADLINE_MS);
    let response;
    let body;
    try {
      response = await fetch(path, init);
      body = await response.json();
    } catch (error) {
      if (error.name === "TimeoutError") throw new Error(`the studio did not answer within ${ANSWER_DEADLINE_MS / 1000} s`);
      if (!response) throw new Error(`the studio server cannot be reached (${error.message}); is shipmap studio still running?`);
      throw new Error(`the studio answered ${response.status} without JSON`);
    }
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  function status(text, kind) {
    const box = $("#status");
    box.textContent = text;
    box.dataset.kind = kind || "info";
  }

  // --- completion ------------------------------------------------------------------------------------

  const SPEC_WORDS = new Set(["fields"]);

  function kindOf(lines, index, path) {
    // The target's name is path[1] under "targets"; find its `kind:` line among the target's keys.
    if (path[0] !== "targets" || path.length < 2) return null;
    for (let i = 0; i < lines.length; i++) {
      const match = /^(\s*)kind:\s*([A-Za-z0-9_.]+)/.exec(lines[i]);
      if (!match) continue;
      const owner = window.ShipmapEditor.keyPath(lines, i, match[1].length);
      if (owner.length === 2 && owner[0] === "targets" && owner[1] === path[1]) return match[2];
    }
    return null;
  }

  function kindFields(kind, payloadPath) {
    let node = state.schema.kinds[kind] ? state.schema.kinds[kind].fields : null;
    for (const name of payloadPath) {
      if (!node || !node[name]) return null;
      node = node[name].fields;
    }
    return node;
  }

  function complete(context) {
    const schema = state.schema;
    if (!schema) return [];
    const keys = (list) =>
      list.map((key) => ({ label: key.name, insert: `${key.name}: `, detail: (key.required ? "required · " : "") + key.description }));
    const notPresent = (items) => items.filter((item) => !context.siblings || !context.siblings.has(item.label));
    if (context.where === "value") {
      if (context.key === "kind") {
        return Object.entries(schema.kinds).map(([name, kind]) => ({ label: name, insert: name, detail: kind.route }));
      }
      return schema.functions.map((fn) => ({ label: fn.name, insert: `${fn.name}(`, detail: `${fn.name}(${fn.signature})` }));
    }
    const path = context.path;
    if (path.length === 0) return notPresent(keys(schema.keys.top));
    if (path[0] === "lookups" && path.length === 2) return notPresent(keys(schema.keys.lookup));
    if (path[0] === "targets" && path.length === 2) return notPresent(keys(schema.keys.target));
    if (path[0] === "fragments" && path.length >= 2) return notPresent(keys(schema.keys.field));
    if (path[0] === "targets" && path.length >= 3 && path[2] === "fields") {
      const kind = kindOf(context.lines, context.index, path);
      const payloadPath = path.slice(3).filter((part) => !SPEC_WORDS.has(part));
      const fields = kind ? kindFields(kind, payloadPath) : null;
      const items = [];
      for (const [name, field] of Object.entries(fields || {})) {
        const type = field.array ? `array of ${Object.keys(field.fields).length ? "objects" : field.type}` : field.type;
        items.push({ label: name, insert: `${name}: `, detail: `${field.required ? "required · " : ""}${type} · ${kind}` });
      }
      if (payloadPath.length > 0 && path[path.length - 1] !== "fields") items.push(...keys(schema.keys.field));
      return notPresent(items);
    }
    return [];
  }

  const editor = new window.ShipmapEditor.Editor($("#editor"), { onChange: mappingChanged, complete });

  // --- evaluation --------------------------------------------------------------------------------------

  function mappingChanged() {
    $("#mapping-state").textContent = editor.value === state.savedText ? "" : "● unsaved";
    schedule();
  }

  // body[data-pending] is "true" from an edit until the page shows its result (tests wait on it).
  function schedule() {
    clearTimeout(state.timer);
    document.body.dataset.pending = "true";
    state.timer = setTimeout(evaluateNow, DEBOUNCE_MS);
  }

  async function evaluateNow() {
    state.timer = null;
    const sequence = ++state.sequence;
    document.body.dataset.evaluating = "true";
    try {
      const result = await api("/api/evaluate", {
        method: "POST",
        json: {
          mapping: editor.value,
          mapping_file: state.mappingFile,
          sample: $("#sample").value,
          sample_name: state.sampleFile || state.sampleName,
          index: state.index,
          documents: $("#documents").value,
        },
      });
      if (sequence !== state.sequence) return; // a newer edit is on its way
      state.last = result;
      render(result);
      status(...summary(result));
    } catch (error) {
      if (sequence === state.sequence) notEvaluated(error.message);
    } finally {
      if (sequence === state.sequence) {
        document.body.dataset.evaluating = "false";
        document.body.dataset.evaluated = String(sequence);
        if (state.timer === null) document.body.dataset.pending = "false";
      }
    }
  }

  // The call failed (too large, too slow, server gone): say so where the result goes, and show no result
  // from before as if it were this input's.
  function notEvaluated(message) {
    state.last = null;
    status(message, "error");
    editor.setMarkers([]);
    $("#diagnostics").innerHTML = "";
    $("#requests-note").textContent = "";
    $("#unread-count").textContent = "0";
    $("#unread").innerHTML = "";
    $("#targets").innerHTML = `<pre class="error-box" id="not-evaluated">Not evaluated: ${escapeHtml(message)}</pre>`;
  }

  // The header's word on the result: green only when every target made a valid payload or was skipped.
  function summary(result) {
    if (!result.mapping.ok) return ["the mapping has errors", "error"];
    if (state.sampleError || result.sample.error) return ["the sample cannot be read", "error"];
    if (result.documents_error) return ["the enrichment documents cannot be used", "error"];
    const count = (wanted) => result.targets.filter((t) => t.status === wanted).length;
    const bad = [[count("failed"), "failed"], [count("invalid"), "with contract problems"]].filter(([n]) => n);
    if (!bad.length) return ["evaluated", "ok"];
    return [`evaluated: ${bad.map(([n, what]) => `${n} ${n === 1 ? "target" : "targets"} ${what}`).join(", ")}`, "error"];
  }

  function render(result) {
    const diagnostics = result.diagnostics.filter((d) => !d.file || d.file === result.mapping.file);
    editor.setMarkers(diagnostics.map((d) => ({ line: d.line, severity: d.severity, message: d.message })));
    const list = $("#diagnostics");
    list.innerHTML = diagnostics
      .map(
        (d, i) =>
          `<li class="${d.severity}" data-index="${i}" data-line="${d.line || ""}"><pre>${escapeHtml(d.text)}</pre></li>`
      )
      .join("");
    list.querySelectorAll("li").forEach((item) => {
      item.addEventListener("click", () => {
        const d = diagnostics[Number(item.dataset.index)];
        if (d.line) editor.reveal(d.line, d.column);
      });
    });
    $("#mapping-name").textContent = result.mapping.name ? `(${result.mapping.name})` : "";
    renderSample(result.sample);
    const documentsError = $("#documents-error");
    documentsError.hidden = !result.documents_error;
    documentsError.textContent = result.documents_error ? result.documents_error.text : "";
    renderTargets(result);
    const unread = result.unread || [];
    const more = (result.unread_count || 0) - unread.length;
    $("#unread-count").textContent = String(result.unread_count || 0);
    $("#unread").innerHTML =
      unread.map((path) => `<li><code>${escapeHtml(path)}</code></li>`).join("") +
      (more > 0 ? `<li class="muted">… ${more} more (shipmap test --coverage lists them all)</li>` : "");
  }

  function renderSample(sample) {
    const picker = $("#document");
    const box = $("#sample-error");
    if (!sample) return;
    const documents = sample.documents;
    picker.hidden = documents.length < 2;
    picker.innerHTML = documents
      .map((d, i) => `<option value="${i}">${escapeHtml(d.origin)}${d.ok ? "" : " (not JSON)"}</option>`)
      .join("");
    picker.value = String(sample.index);
    if (state.sampleError) {
      box.hidden = false;
      box.textContent = state.sampleError;
    } else if (sample.error) {
      box.hidden = false;
      box.textContent = sample.error.text;
    } else if (sample.empty) {
      box.hidden = false;
      box.textContent = "Paste or drop a JSON document, an array of documents or NDJSON here, or pick a sample.";
    } else {
      box.hidden = true;
      box.textContent = "";
    }
  }

  function json(value) {
    return escapeHtml(JSON.stringify(value, null, 2)).replace(
      /(&quot;(?:\\.|[^&\\]|&(?!quot;))*&quot;)(\s*:)?|\b(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\b|\b(true|false|null)\b/g,
      (all, string, colon, number, literal) => {
        if (string) return `<span class="${colon ? "j-key" : "j-string"}">${string}</span>${colon || ""}`;
        if (number) return `<span class="j-number">${number}</span>`;
        return `<span class="j-literal">${literal}</span>`;
      }
    );
  }

  function requestText(request) {
    if (request.action) return `${request.action}: ${request.reason || ""}`;
    const headers = Object.entries(request.headers).map(([name, value]) => `${name}: ${value}`).join("\n");
    return `${request.method} ${request.url}\n${headers}\n\n${JSON.stringify(request.body, null, 2)}`;
  }

  function renderTargets(result) {
    const container = $("#targets");
    const note = $("#requests-note");
    note.textContent = result.requests_note ? `Requests: ${result.requests_note}` : "";
    if (!result.mapping.ok) {
      container.innerHTML = '<p class="muted">The mapping does not compile: the error is marked in the editor.</p>';
      return;
    }
    if (!result.targets.length) {
      const why = result.documents_error
        ? "The enrichment documents cannot be used (see the sample pane)."
        : state.sampleError || (result.sample && result.sample.error)
          ? "The sample cannot be read (see the sample pane)."
          : "No sample document to map yet.";
      container.innerHTML = `<p class="muted">${why}</p>`;
      return;
    }
    const open = new Set([...container.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    const fresh = container.children.length === 0 || container.querySelector(".muted");
    container.innerHTML =
      result.targets.map((t) => targetHtml(t)).join("") +
      (result.cut ? `<p class="muted" id="cut">${escapeHtml(result.cut.text)}</p>` : "") +
      (result.left_off
        ? `<p class="muted" id="left-off">${result.left_off} more payloads not shown: the studio shows the first ${result.targets.length} cards (shipmap preview prints them all).</p>`
        : "");
    container.querySelectorAll("details").forEach((details) => {
      if (fresh ? details.dataset.key.endsWith(":payload") : open.has(details.dataset.key)) details.open = true;
    });
    container.querySelectorAll("[data-line]").forEach((item) => {
      item.addEventListener("click", () => editor.reveal(Number(item.dataset.line), 1));
    });
  }

  function targetHtml(t) {
    const badge = { ok: "valid", invalid: "contract problems", skipped: "skipped", failed: "failed" }[t.status];
    let body = "";
    if (t.status === "skipped") body += `<p class="reason">Skipped: ${escapeHtml(t.reason)}</p>`;
    if (t.status === "failed") body += `<pre class="error-box">${escapeHtml(t.error.text)}</pre>`;
    if (t.problems) {
      body +=
        '<ul class="problems">' +
        t.problems
          .map((p) => `<li data-line="${p.line || ""}"><code>${escapeHtml(p.field)}</code> ${escapeHtml(p.message.slice(p.field.length + 2))}${p.line ? ` <span class="muted">(line ${p.line})</span>` : ""}</li>`)
          .join("") +
        "</ul>";
    }
    if (t.payload !== undefined) {
      body += `<details data-key="${escapeHtml(t.name)}:payload"><summary>Payload <span class="muted">${escapeHtml(t.route || "")}</span></summary><pre class="payload json">${json(t.payload)}</pre></details>`;
    }
    if (t.request) {
      body += `<details data-key="${escapeHtml(t.name)}:request"><summary>HTTP request <span class="muted">(as shipmap run would send it; secrets redacted)</span></summary><pre class="request">${escapeHtml(requestText(t.request))}</pre></details>`;
    }
    return `<article class="target" data-target="${escapeHtml(t.name)}" data-status="${t.status}">
      <h3>${escapeHtml(t.name)} <span class="kind">${escapeHtml(t.kind)}</span> <span class="badge ${t.status}">${badge}</span></h3>${body}</article>`;
  }

  // --- files -------------------------------------------------------------------------------------------

  async function loadMapping(file) {
    const { text } = await api(`/api/file?path=${encodeURIComponent(file)}`);
    state.mappingFile = file;
    state.savedText = text;
    editor.value = text;
    $("#cases-file").textContent = "";
    $("#cases").innerHTML = "";
  }

  async function loadSample(file) {
    if (file === PASTED) {
      state.sampleError = null;
      state.sampleFile = null;
      state.sampleName = "pasted";
      schedule();
      return;
    }
    state.index = 0;
    try {
      const { text } = await api(`/api/file?path=${encodeURIComponent(file)}`);
      state.sampleFile = file;
      state.sampleError = null;
      $("#sample").value = text;
    } catch (error) {
      // Not the previous sample's text under this file's name: no sample, and why.
      state.sampleFile = null;
      state.sampleName = file;
      state.sampleError = error.message;
      $("#sample").value = "";
    }
    schedule();
  }

  // A dropped file is read as the server reads a file: UTF-8, or an error at its first bad byte (never
  // silently mapped with U+FFFD where the bytes were).
  async function readDropped(file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (error) {
      const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
      const before = text.slice(0, text.indexOf("\uFFFD"));
      const line = before.split("\n").length;
      const column = before.length - before.lastIndexOf("\n");
      const byte = bytes[new TextEncoder().encode(before).length].toString(16).padStart(2, "0");
      throw new Error(`${file.name}:${line}:${column}: error: cannot read file: not UTF-8 text (byte 0x${byte}); save it as UTF-8`);
    }
  }

  async function saveMapping() {
    if (!state.mappingFile) return;
    const text = editor.value;
    await api(`/api/file?path=${encodeURIComponent(state.mappingFile)}`, { method: "PUT", json: { text } });
    state.savedText = text;
    $("#mapping-state").textContent = "";
    status(`saved ${state.mappingFile}`, "ok");
  }

  // --- cases -------------------------------------------------------------------------------------------

  async function runCases() {
    if (!state.mappingFile) return;
    const box = $("#cases");
    let result;
    try {
      result = await api("/api/cases/run", { method: "POST", json: { mapping: editor.value, mapping_file: state.mappingFile } });
    } catch (error) {
      // As evaluation does: no verdicts from before left standing as if they were this text's, and why.
      box.innerHTML = `<pre class="error-box" id="cases-not-run">Cases not run: ${escapeHtml(error.message)}</pre>`;
      throw error;
    }
    $("#cases-file").textContent = result.file;
    if (result.error) {
      box.innerHTML = `<pre class="error-box">${escapeHtml(result.error)}</pre>`;
      return;
    }
    if (!result.exists) {
      box.innerHTML = `<p class="muted">${escapeHtml(result.file)} does not exist yet: "Save as case" creates it.</p>`;
      return;
    }
    const lines = (messages) =>
      messages
        .map((line) => {
          const cls = /^\+(?!\+\+)/.test(line) ? "diff-add" : /^-(?!--)/.test(line) ? "diff-del" : /^@@/.test(line) ? "diff-hunk" : "";
          return `<span class="${cls}">${escapeHtml(line)}</span>`;
        })
        .join("\n");
    box.innerHTML =
      `<p class="summary ${result.failed ? "fail" : "pass"}">${result.passed} passed, ${result.failed} failed</p>` +
      result.cases
        .map(
          (c) =>
            `<div class="case ${c.ok ? "pass" : "fail"}" data-case="${escapeHtml(c.name)}"><span class="verdict">${c.ok ? "PASS" : "FAIL"}</span> ${escapeHtml(c.name)} <span class="muted">line ${c.line}</span>` +
            (c.messages.length ? `<pre class="diff">${lines(c.messages)}</pre>` : "") +
            "</div>"
        )
        .join("");
  }

  async function saveCase() {
    if (!state.mappingFile) return;
    const name = $("#case-name").value.trim() || `${state.sampleFile || "pasted sample"}${state.index ? ` [${state.index}]` : ""}`;
    const result = await api("/api/cases/save", {
      method: "POST",
      json: {
        mapping: editor.value,
        mapping_file: state.mappingFile,
        sample: $("#sample").value,
        sample_file: state.sampleFile,
        index: state.index,
        name,
        documents: $("#documents").value,
      },
    });
    status(`saved case "${result.name}" to ${result.file}`, "ok");
    await runCases();
  }

  function guard(action) {
    return () => action().catch((error) => status(error.message, "error"));
  }

  // --- wiring ------------------------------------------------------------------------------------------

  function wire() {
    $("#mapping-file").addEventListener("change", guard(() => loadMapping($("#mapping-file").value)));
    $("#sample-file").addEventListener("change", guard(() => loadSample($("#sample-file").value)));
    $("#documents").addEventListener("input", schedule);
    $("#document").addEventListener("change", () => {
      state.index = Number($("#document").value);
      schedule();
    });
    $("#sample").addEventListener("input", () => {
      state.sampleError = null;
      if (state.sampleFile) {
        // Edited: still named after its file (for located errors), but no longer the file itself.
        $("#sample-file").value = PASTED;
        state.sampleName = state.sampleFile;
        state.sampleFile = null;
      }
      schedule();
    });
    const pane = $("#sample-pane");
    pane.addEventListener("dragover", (event) => {
      event.preventDefault();
      pane.classList.add("dropping");
    });
    pane.addEventListener("dragleave", () => pane.classList.remove("dropping"));
    pane.addEventListener("drop", (event) => {
      event.preventDefault();
      pane.classList.remove("dropping");
      const file = event.dataTransfer.files[0];
      if (!file) return;
      readDropped(file)
        .then(
          (text) => {
            $("#sample").value = text;
            state.sampleError = null;
          },
          (error) => {
            $("#sample").value = "";
            state.sampleError = error.message;
          }
        )
        .finally(() => {
          $("#sample-file").value = PASTED;
          state.sampleFile = null;
          state.sampleName = file.name;
          state.index = 0;
          schedule();
        });
    });
    $("#save-mapping").addEventListener("click", guard(saveMapping));
    $("#run-cases").addEventListener("click", guard(runCases));
    $("#save-case").addEventListener("click", guard(saveCase));
    document.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key === "s") {
        event.preventDefault();
        guard(saveMapping)();
      }
    });
    window.addEventListener("beforeunload", (event) => {
      if (state.savedText !== null && editor.value !== state.savedText) event.preventDefault();
    });
  }

  async function start() {
    wire();
    if (!token) {
      status("this page needs the token from the URL that shipmap studio printed", "error");
      return;
    }
    const [workspace, schema] = await Promise.all([api("/api/workspace"), api("/api/schema")]);
    state.schema = schema;
    $("#root").textContent = workspace.root;
    const wanted = new URLSearchParams(location.search);
    const mappings = workspace.mappings;
    $("#mapping-file").innerHTML = mappings.map((m) => `<option>${escapeHtml(m)}</option>`).join("");
    $("#sample-file").innerHTML =
      `<option value="${PASTED}">(pasted or dropped)</option>` +
      workspace.samples.map((s) => `<option>${escapeHtml(s)}</option>`).join("");
    if (!mappings.length) {
      status("no mapping (a YAML file starting with 'shipmap: 1') in this directory; shipmap init writes one", "error");
      return;
    }
    const mapping = mappings.includes(wanted.get("mapping")) ? wanted.get("mapping") : mappings[0];
    $("#mapping-file").value = mapping;
    await loadMapping(mapping);
    const sample = workspace.samples.includes(wanted.get("sample")) ? wanted.get("sample") : workspace.samples[0];
    if (sample) {
      $("#sample-file").value = sample;
      await loadSample(sample);
    } else {
      schedule();
    }
  }

  start().catch((error) => status(error.message, "error"));
})();
