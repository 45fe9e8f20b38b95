// shipmap studio: a small YAML editor. A textarea does the editing; a highlighted copy of its text lies
// under it (the textarea's own text is transparent), a gutter numbers and marks the lines, and a popup
// offers completions. Written for the studio so that nothing large is vendored; no dependencies.
"use strict";

(function () {
  const KEY_LINE = /^(\s*)(- +)?([A-Za-z0-9_.$-]+|"[^"]*"|'[^']*')(\s*:)(?=\s|$)/;

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function span(cls, text) {
    return `<span class="${cls}">${escapeHtml(text)}</span>`;
  }

  // Where a comment starts on a YAML line: a # at the start or after a space, outside quotes.
  function commentStart(line) {
    let quote = null;
    for (let i = 0; i < line.length; i++) {
      const ch = line[i];
      if (quote) {
        if (ch === "\\" && quote === '"') i++;
        else if (ch === quote) quote = null;
      } else if (ch === '"' || ch === "'") {
        quote = ch;
      } else if (ch === "#" && (i === 0 || /\s/.test(line[i - 1]))) {
        return i;
      }
    }
    return -1;
  }

  // A value: quoted strings, Jinja, numbers, true/false/null, flow punctuation; the rest is plain text.
  function highlightValue(text) {
    const token =
      /("(?:\\.|[^"\\])*"?|'(?:''|[^'])*'?)|(\{\{.*?\}\}|\{%.*?%\})|(-?\b\d+(?:\.\d+)?\b)|\b(true|false|null|~)\b|([{}\[\],])|([A-Za-z_][A-Za-z0-9_]*)(?=\()|([A-Za-z0-9_.$-]+)(?=\s*:\s)/g;
    let out = "";
    let last = 0;
    let match;
    while ((match = token.exec(text)) !== null) {
      out += escapeHtml(text.slice(last, match.index));
      const [all, str, jinja, num, lit, punct, fn, key] = match;
      if (str !== undefined) out += span("tok-string", all);
      else if (jinja !== undefined) out += span("tok-jinja", all);
      else if (num !== undefined) out += span("tok-number", all);
      else if (lit !== undefined) out += span("tok-literal", all);
      else if (punct !== undefined) out += span("tok-punct", all);
      else if (fn !== undefined) out += span("tok-function", all);
      else if (key !== undefined) out += span("tok-key", all);
      last = match.index + all.length;
      if (all.length === 0) token.lastIndex++;
    }
    return out + escapeHtml(text.slice(last));
  }

  function highlightLine(line) {
    const hash = commentStart(line);
    const code = hash >= 0 ? line.slice(0, hash) : line;
    const comment = hash >= 0 ? line.slice(hash) : "";
    let html;
    const key = KEY_LINE.exec(code);
    if (key) {
      const [all, indent, dash, name, colon] = key;
      html =
        escapeHtml(indent) +
        (dash ? span("tok-punct", dash) : "") +
        span("tok-key", name) +
        span("tok-punct", colon) +
        highlightValue(code.slice(all.length));
    } else {
      const item = /^(\s*)(- +)(.*)$/.exec(code);
      html = item
        ? escapeHtml(item[1]) + span("tok-punct", item[2]) + highlightValue(item[3])
        : highlightValue(code);
    }
    return html + (comment ? span("tok-comment", comment) : "");
  }

  // The chain of keys that encloses line `index` (by indentation), e.g. ["targets", "order", "fields"].
  function keyPath(lines, index, indent) {
    const path = [];
    let limit = indent;
    for (let i = index - 1; i >= 0 && limit > 0; i--) {
      const line = lines[i];
      if (!line.trim() || /^\s*#/.test(line)) continue;
      const key = KEY_LINE.exec(line);
      const lead = line.length - line.trimStart().length;
      const column = key ? lead + (key[2] ? key[2].length : 0) : lead;
      if (column < limit) {
        if (key) path.unshift(key[3].replace(/^["']|["']$/g, ""));
        limit = key && key[2] ? lead : column;
      }
    }
    return path;
  }

  function siblingKeys(lines, index, indent) {
    const found = new Set();
    for (const step of [-1, 1]) {
      for (let i = index + step; i >= 0 && i < lines.length; i += step) {
        const line = lines[i];
        if (!line.trim() || /^\s*#/.test(line)) continue;
        const lead = line.length - line.trimStart().length;
        if (lead < indent) break;
        const key = KEY_LINE.exec(line);
        if (lead === indent && key) found.add(key[3]);
      }
    }
    return found;
  }

  class Editor {
    constructor(root, options) {
      this.options = options || {};
      this.markers = new Map();
      root.classList.add("editor");
      root.innerHTML =
        '<div class="gutter" aria-hidden="true"><div class="gutter-inner"></div></div>' +
        '<div class="code"><pre class="highlight" aria-hidden="true"><code></code></pre>' +
        '<textarea class="input" spellcheck="false" wrap="off" autocapitalize="off" autocomplete="off" ' +
        'aria-label="mapping YAML"></textarea></div>' +
        '<ul class="completions" role="listbox" hidden></ul><span class="measure">M</span>';
      this.root = root;
      this.input = root.querySelector("textarea");
      this.highlight = root.querySelector(".highlight");
      this.code = root.querySelector(".highlight code");
      this.gutter = root.querySelector(".gutter-inner");
      this.popup = root.querySelector(".completions");
      this.measure = root.querySelector(".measure");
      this.items = [];
      this.active = 0;
      this.input.addEventListener("input", () => this.changed(true));
      this.input.addEventListener("scroll", () => this.sync());
      this.input.addEventListener("keydown", (event) => this.keydown(event));
      this.input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
      this.input.addEventListener("click", () => this.close());
      this.popup.addEventListener("mousedown", (event) => {
        const item = event.target.closest("li");
        if (item) {
          event.preventDefault();
          this.accept(Number(item.dataset.index));
        }
      });
    }

    get value() {
      return this.input.value;
    }

    set value(text) {
      this.input.value = text;
      this.changed(false);
    }

    changed(typed) {
      this.render();
      if (this.options.onChange) this.options.onChange(this.input.value);
      if (typed) this.suggest(false);
    }

    render() {
      const lines = this.input.value.split("\n");
      let code = "";
      let gutter = "";
      lines.forEach((line, i) => {
        const number = i + 1;
        const marker = this.markers.get(number);
        const cls = marker ? ` marked ${marker.severity}` : "";
        const title = marker ? ` title="${escapeHtml(marker.message).replace(/"/g, "&quot;")}"` : "";
        code += `<div class="line${cls}" data-line="${number}">${highlightLine(line) || " "}</div>`;
        gutter += `<div class="number${cls}" data-line="${number}"${title}>${number}</div>`;
      });
      this.code.innerHTML = code;
      this.gutter.innerHTML = gutter;
      this.sync();
    }

    sync() {
      const x = this.input.scrollLeft;
      const y = this.input.scrollTop;
      this.highlight.style.transform = `translate(${-x}px, ${-y}px)`;
      this.gutter.style.transform = `translateY(${-y}px)`;
    }

    // markers: [{line, severity: "error" | "warning", message}]; the first per line wins, errors first.
    setMarkers(markers) {
      this.markers = new Map();
      const sorted = [...markers].sort((a, b) => (a.severity === "error" ? 0 : 1) - (b.severity === "error" ? 0 : 1));
      for (const marker of sorted) {
        if (marker.line && !this.markers.has(marker.line)) this.markers.set(marker.line, marker);
      }
      this.render();
    }

    reveal(line, column) {
      const lines = this.input.value.split("\n");
      let offset = 0;
      for (let i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
      offset += Math.max((column || 1) - 1, 0);
      this.input.focus();
      this.input.setSelectionRange(offset, offset);
      const height = this.lineHeight();
      this.input.scrollTop = Math.max((line - 3) * height, 0);
      this.sync();
    }

    lineHeight() {
      return this.measure.getBoundingClientRect().height || 18;
    }

    // --- completion ---------------------------------------------------------------------------------

    context() {
      const text = this.input.value;
      const caret = this.input.selectionStart;
      const lines = text.slice(0, caret).split("\n");
      const index = lines.length - 1;
      const before = lines[index];
      const all = text.split("\n");
      const prefix = (/[A-Za-z0-9_.]*$/.exec(before) || [""])[0];
      const keyTyping = /^(\s*)(- +)?[A-Za-z0-9_]*$/.exec(before);
      if (keyTyping) {
        const indent = keyTyping[1].length + (keyTyping[2] ? keyTyping[2].length : 0);
        return {
          where: "key",
          prefix,
          path: keyPath(all, index, indent),
          siblings: siblingKeys(all, index, indent),
          lines: all,
          index,
        };
      }
      const value = KEY_LINE.exec(before);
      if (value) {
        const path = keyPath(all, index, before.length - before.trimStart().length);
        return { where: "value", key: value[3], prefix, path, lines: all, index };
      }
      return { where: "value", key: null, prefix, path: [], lines: all, index };
    }

    suggest(explicit) {
      if (!this.options.complete) return;
      const context = this.context();
      if (!explicit && context.prefix.length === 0) return this.close();
      const items = this.options.complete(context).filter(
        (item) => item.label.toLowerCase().startsWith(context.prefix.toLowerCase()) && item.label !== context.prefix
      );
      if (!items.length) return this.close();
      this.items = items.slice(0, 50);
      this.prefix = context.prefix;
      this.active = 0;
      this.popup.innerHTML = this.items
        .map(
          (item, i) =>
            `<li role="option" data-index="${i}" class="${i === 0 ? "active" : ""}">` +
            `<span class="label">${escapeHtml(item.label)}</span>` +
            `<span class="detail">${escapeHtml(item.detail || "")}</span></li>`
        )
        .join("");
      this.place();
      this.popup.hidden = false;
    }

    place() {
      const caret = this.input.selectionStart;
      const lines = this.input.value.slice(0, caret).split("\n");
      const rect = this.measure.getBoundingClientRect();
      const width = rect.width || 8;
      const height = rect.height || 18;
      const code = this.input.getBoundingClientRect();
      const root = this.root.getBoundingClientRect();
      const style = getComputedStyle(this.input);
      const left = code.left - root.left + parseFloat(style.paddingLeft) + (lines[lines.length - 1].length - this.prefix.length) * width - this.input.scrollLeft;
      const top = code.top - root.top + parseFloat(style.paddingTop) + lines.length * height - this.input.scrollTop;
      this.popup.style.left = `${Math.max(left, 0)}px`;
      this.popup.style.top = `${top + 2}px`;
    }

    close() {
      this.popup.hidden = true;
      this.items = [];
    }

    accept(index) {
      const item = this.items[index];
      if (!item) return;
      const caret = this.input.selectionStart;
      const start = caret - this.prefix.length;
      this.input.setRangeText(item.insert, start, caret, "end");
      this.close();
      this.changed(false);
    }

    keydown(event) {
      if (event.key === " " && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.suggest(true);
        return;
      }
      if (!this.popup.hidden && this.items.length) {
        if (event.key === "ArrowDown" || event.key === "ArrowUp") {
          event.preventDefault();
          const step = event.key === "ArrowDown" ? 1 : -1;
          this.active = (this.active + step + this.items.length) % this.items.length;
          this.popup.querySelectorAll("li").forEach((li, i) => li.classList.toggle("active", i === this.active));
          return;
        }
        if (event.key === "Enter" || event.key === "Tab") {
          event.preventDefault();
          this.accept(this.active);
          return;
        }
        if (event.key === "Escape") {
          event.preventDefault();
          this.close();
          return;
        }
      }
      if (event.key === "Tab") {
        event.preventDefault();
        this.input.setRangeText("  ", this.input.selectionStart, this.input.selectionEnd, "end");
        this.changed(false);
      } else if (event.key === "Enter") {
        // Keep the line's indentation, one level more after a key that opens a block.
        const caret = this.input.selectionStart;
        const line = this.input.value.slice(0, caret).split("\n").pop();
        let indent = /^\s*/.exec(line)[0];
        if (/:\s*$/.test(line)) indent += "  ";
        else if (/^\s*- /.test(line) && /:\s/.test(line)) indent += "  ";
        event.preventDefault();
        this.input.setRangeText("\n" + indent, caret, this.input.selectionEnd, "end");
        this.changed(false);
      }
    }
  }

  window.ShipmapEditor = { Editor, keyPath, highlightLine };
})();
