// The notebook widget (after view.js: the two make anywidget's one ES module): the view in a
// cell's output, answered by the kernel over the widget's comm. The address is the widget's
// synced state (layer, unit, channel, pixel): Python reads what was clicked and may select.
class KernelSource extends rflensViewer.RemoteSource {
  constructor(model) {
    const waiting = new Map();
    let last = 0;
    super((what, q) => new Promise((ok, fail) => {
      const id = ++last;
      waiting.set(id, { ok, fail });
      model.send(Object.assign({ id, what }, q));
    }));
    this.model = model;
    this.answered = (msg) => {
      const w = waiting.get(msg.id);
      if (!w) return;
      waiting.delete(msg.id);
      if (msg.error === undefined) w.ok(msg.answer);
      else w.fail(new Error(msg.error));
    };
    model.on("msg:custom", this.answered);
  }
  async meta() { return this.model.get("_meta"); }
  imageURL() { return this.model.get("_image") || null; }
  close() { this.model.off("msg:custom", this.answered); }
}

const SELECTION = ["layer", "unit", "channel", "pixel"];

export default {
  render({ model, el }) {
    el.classList.add("rflens", "widget");
    el.innerHTML = model.get("_markup");
    // the keys act while the view has the focus, and only on it: not on the notebook's cells
    el.tabIndex = 0;
    el.dataset.lmSuppressShortcuts = "true";
    el.addEventListener("keydown", (ev) => ev.stopPropagation());
    const source = new KernelSource(model);
    let writing = false;
    const address = {
      read: () => Object.fromEntries(SELECTION.map((k) => [k, model.get(k)])),
      write(a) {
        writing = true;  // our own change, not to be applied back
        try { for (const k of SELECTION) model.set(k, k === "unit" ? a.unit || [] : a[k]); } finally { writing = false; }
        model.save_changes();
      },
    };
    const shown = rflensViewer.view(el, source, address, el);
    el.rflensView = shown;  // {state, source, ready}: what the browser test looks into
    let queued = false;
    const changed = () => {  // Python changed the selection: one redraw for the keys that came together
      if (writing || queued) return;
      queued = true;
      queueMicrotask(() => { queued = false; shown.apply(); });
    };
    shown.ready.then(() => SELECTION.forEach((k) => model.on("change:" + k, changed)));
    return () => { SELECTION.forEach((k) => model.off("change:" + k, changed)); source.close(); };
  },
};
