// Launching Debian's Chromium headless, the one way every test and bench here does it. playwright-core
// never downloads a browser; the flags keep Chromium off the (closed) network.
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

// A real WebGPU adapter without a GPU: Chromium's SwiftShader (Vulkan in software). `--disable-gpu`
// stays off here, or WebGPU goes with it.
export const WEBGPU_ARGS = [
  ...CHROMIUM_ARGS.filter((arg) => arg !== "--disable-gpu"),
  "--enable-unsafe-webgpu",
  "--use-webgpu-adapter=swiftshader",
];

export function launchChromium({ webgpu = false } = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}; set CHROMIUM_PATH to a Chromium/Chrome binary.`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: webgpu ? WEBGPU_ARGS : CHROMIUM_ARGS });
}
