/* bpmn-js, dmn-js and the properties panel speak English; they say everything through a
 * `translate(template, replacements)` service. This module replaces it with one that looks the
 * template up in the words the server sent for this page's language (webapp/editor.py
 * VENDOR_WORDS, translated by the catalogs), so the editors' menus and panels read in Chinese. */

export function translateModule(words) {
  const table = words || {};
  function translate(template, replacements) {
    const text = Object.prototype.hasOwnProperty.call(table, template) ? table[template] : template;
    const values = replacements || {};
    return text.replace(/{([^}]+)}/g, (whole, key) =>
      Object.prototype.hasOwnProperty.call(values, key) ? String(values[key]) : whole,
    );
  }
  return { translate: ["value", translate] };
}
