"use strict";
// django-celery-beat's periodic task form: shows what the chosen crontab means under its help text.
// (django-celery-beat's own template does this in an inline script, which the Content-Security-Policy refuses.)
(function ($) {
  const readableCrontabs = JSON.parse(document.getElementById("readable-crontabs").textContent);
  const help = $(".field-crontab .help");
  const originalHelp = help.html();
  $(".field-crontab_translation").hide();
  $(".field-crontab").change(function () {
    const translation = readableCrontabs[$("#id_crontab").val()];
    help.html(originalHelp).append($("<br>"), document.createTextNode("Translation: " + (translation || "")));
  });
})(django.jQuery);
