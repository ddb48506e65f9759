import { createApp, h, watch } from "vue";
import { useRanker } from "./use-ranker.js";
import { report, thumbsDownTheTop } from "../shared/check.js";

const App = {
  setup() {
    const { ranker, error } = useRanker({ storage: false });
    watch([ranker, error], ([value, failure]) => {
      if (failure) report(Promise.reject(failure));
      else if (value) report(Promise.resolve().then(() => thumbsDownTheTop(value)));
    });
    return () => h("p", ranker.value ? "ranked" : error.value ? String(error.value.message) : "loading");
  },
};

createApp(App).mount("#app");
