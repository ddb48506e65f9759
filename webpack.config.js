// Builds the demo (www/index.html) and the in-browser benchmark (www/bench.html) into www/dist/.
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

export default (env, argv) => ({
  mode: argv.mode ?? "production",
  context: __dirname,
  entry: {
    index: "./www/index.js",
    bench: "./www/bench.js",
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
    new WatchStylesheet(),
  ],
});
