// SIMtrix's admin behaviour, as a file: the Content-Security-Policy allows no inline script.
"use strict";
document.addEventListener("click", (event) => {
  // A field to copy from (a device token): one click selects all of it.
  const field = event.target.closest("[data-select-on-click]");
  if (field) {
    field.select();
  }
});
