// A monitored version's page: the drift heatmap, prediction drift, performance with its
// interval and the CBPE estimate, label coverage. Acknowledge buttons post through
// actions.js (data-action); Enter in a note presses its form's button instead of
// submitting the form.
import { drawFigures } from "./figures.js";

for (const form of document.querySelectorAll("form.ack")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const button = form.querySelector("[data-action]");
    if (button) button.click();
  });
}

drawFigures();
