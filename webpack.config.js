// Builds the demo (www/index.html), the in-browser benchmark (www/bench.html), the comparison
// with ONNX Runtime Web (www/compare.html), the server's dashboard (www/dashboard.html) and the
// CPU-vs-WebGPU scoring benchmark (www/gpu-bench.html) into www/dist/.
// `feedloop` resolves to the built package in pkg/, imported exactly as an app would import it;
// webpack 5 turns the package's `new URL("./x.wasm", import.meta.url)` references into emitted
// assets, so no experiments or extra loaders are needed. www/dist is plain static files.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import HtmlWebpackPlugin from "html-webpack-plugin";

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const www = path.resolve(__dirname, "www");
const stylesheet = path.join(www, "style.css");

// The stylesheet is inlined into both pages through the template (no CSS loader needed). A getter,
// so each (re)compilation reads the current file; html-webpack-plugin merges it into its defaults.
const pageParameters = {
  get styles() {
    return readFileSync(stylesheet, "utf8");
  },
};

// Webpack does not watch template parameters; this keeps `--watch` rebuilding on style.css edits.
class WatchStylesheet {
  apply(compiler) {
    compiler.hooks.thisCompilation.tap("WatchStylesheet", (compilation) => {
      compilation.fileDependencies.add(stylesheet);
    });
  }
}

// onnxruntime-web's wasm build, copied as static files into dist/ort/ (the comparison page imports it
// at run time, so webpack does not rewrite its own wasm loading).
const ORT_DIST = path.join(__dirname, "node_modules/onnxruntime-web/dist");
const ORT_FILES = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];
class CopyOrt {
  apply(compiler) {
    const { RawSource } = compiler.webpack.sources;
    compiler.hooks.thisCompilation.tap("CopyOrt", (compilation) => {
      compilation.hooks.processAssets.tap(
        { name: "CopyOrt", stage: compiler.webpack.Compilation.PROCESS_ASSETS_STAGE_ADDITIONAL },
        () => {
          for (const file of ORT_FILES) {
            const source = path.join(ORT_DIST, file);
            compilation.fileDependencies.add(source);
            compilation.emitAsset(`ort/${file}`, new RawSource(readFileSync(source)));
          }
        },
      );
    });
  }
}

export default (env, argv) => ({
  mode: argv.mode ?? "production",
  context: __dirname,
  entry: {
    index: "./www/index.js",
    bench: "./www/bench.js",
    compare: "./www/compare.js",
    dashboard: "./www/dashboard.js",
    "gpu-bench": "./www/gpu-bench.js",
  },
  output: {
    path: path.join(www, "dist"),
    filename: "[name].[contenthash:8].js",
    assetModuleFilename: "assets/[name].[contenthash:8][ext]",
    publicPath: "auto",
    clean: true,
  },
  resolve: {
    alias: { feedloop: path.resolve(__dirname, "pkg") },
  },
  devtool: false,
  performance: {
    // The wasm is several MB and the model ~2 MB; both are fetched once, not parsed as JS.
    hints: false,
  },
  plugins: [
    new HtmlWebpackPlugin({
      template: path.join(www, "index.html"),
      filename: "index.html",
      chunks: ["index"],
      scriptLoading: "module",
      templateParameters: pageParameters,
    }),
    new HtmlWebpackPlugin({
      template: path.join(www, "bench.html"),
      filename: "bench.html",
      chunks: ["bench"],
      scriptLoading: "module",
      templateParameters: pageParameters,
    }),
    new HtmlWebpackPlugin({
      template: path.join(www, "compare.html"),
      filename: "compare.html",
      chunks: ["compare"],
      scriptLoading: "module",
      templateParameters: pageParameters,
    }),
    new HtmlWebpackPlugin({
      template: path.join(www, "dashboard.html"),
      filename: "dashboard.html",
      chunks: ["dashboard"],
      scriptLoading: "module",
      templateParameters: pageParameters,
    }),
    new HtmlWebpackPlugin({
      template: path.join(www, "gpu-bench.html"),
      filename: "gpu-bench.html",
      chunks: ["gpu-bench"],
      scriptLoading: "module",
      templateParameters: pageParameters,
    }),
    new CopyOrt(),
    new WatchStylesheet(),
  ],
});
