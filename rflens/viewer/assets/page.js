// The page of `rflens view` (after view.js): the view on the whole page, answered by the
// server or, in an exported page, by the geometry inlined in it; the address is the URL's
// hash, so a copied address comes back to the same layer, unit, channel and pixel.
"use strict";
(function () {
  const { view, RemoteSource, StaticSource, fetchJSON } = rflensViewer;

  class ServerSource extends RemoteSource {
    constructor() {
      super((what, q) => fetchJSON(`api/${what}?layer=${encodeURIComponent(q.layer)}` +
                                   (what === "unit" ? "&unit=" + q.unit.join(",") : "&pixel=" + q.pixel.join(",")) +
                                   (q.channel === null ? "" : "&channel=" + q.channel)));
    }
    async meta() { this.info = await fetchJSON("api/meta"); return this.info; }
    imageURL() { return this.info.image ? "image.png" : null; }
  }

  const hash = {
    write(a) {
      let h = "#layer=" + encodeURIComponent(a.layer);
      if (a.unit && a.unit.length) h += "&unit=" + a.unit.join(",");
      if (a.channel !== null) h += "&channel=" + a.channel;
      if (a.pixel) h += "&pixel=" + a.pixel.join(",");
      if (location.hash !== h) history.replaceState(null, "", h);
    },
    read() {
      const out = {};
      for (const part of location.hash.replace(/^#/, "").split("&")) {
        const i = part.indexOf("=");
        if (i < 0) continue;
        const k = part.slice(0, i), v = decodeURIComponent(part.slice(i + 1));
        if (k === "layer") out.layer = v;
        else if (k === "unit" || k === "pixel") {
          const nums = v.split(",").map(Number);
          if (nums.every(Number.isInteger)) out[k] = nums;
        } else if (k === "channel" && /^\d+$/.test(v)) out.channel = Number(v);
      }
      return out;
    },
  };

  const data = document.getElementById("rflens-data");
  const shown = view(document.body, data ? new StaticSource(JSON.parse(data.textContent)) : new ServerSource(), hash, document);
  window.rflensView = shown;  // {state, source, ready}: what the browser tests look into
  window.addEventListener("hashchange", () => { if (document.body.dataset.ready) shown.apply(); });
})();
