// The README's Vite recipe. Vite 5–7's dev server pre-bundles dependencies into node_modules/.vite/deps/,
// where feedloop's `new URL("./feedloop_wasm_bg.wasm", import.meta.url)` names no file and the dev
// server answers with index.html (vitejs/vite#8427): keep feedloop out of the pre-bundling. Builds,
// and Vite 8's dev server, need nothing.
export default {
  optimizeDeps: { exclude: ["feedloop"] },
};
