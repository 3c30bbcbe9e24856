// A form with data-confirm="question" asks before it is sent: an administrator's one tap on a
// phone must not deactivate or move someone by mistake. Without script the form sends at once,
// as before; the server checks every field either way.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
