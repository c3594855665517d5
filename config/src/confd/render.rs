//! Renders a resource's template over its keys with gtmpl and confd's functions.

use gtmpl::{Context, Template, Value};

use super::error::ConfdError;
use super::funcs;
use super::resource::{check_inside, Resource};
use super::rewrite;
use super::store::KvStore;

/// The template of `resource` rendered over `store`. The template file is read again at
/// each render (as confd does), and refused when a symlink now leads it out of the
/// templates directory.
pub(crate) fn render(resource: &Resource, store: KvStore) -> Result<String, ConfdError> {
    let template_error = |reason: String| ConfdError::Template {
        resource: resource.file.clone(),
        template: resource.template.clone(),
        reason,
    };
    if !resource.template.exists() {
        return Err(template_error("missing template".to_owned()));
    }
    let real = check_inside(
        &resource.file,
        &resource.templates_dir,
        &resource.template,
        &resource.src,
    )?;
    let text = std::fs::read_to_string(&real).map_err(|e| template_error(e.to_string()))?;
    let (rendered, missing) = funcs::with_store(store, || render_text(&text));
    rendered.map_err(|reason| match missing {
        Some(key) => ConfdError::MissingKey {
            resource: resource.file.clone(),
            template: resource.template.clone(),
            key,
            reason,
        },
        None => template_error(reason),
    })
}

/// Parses and executes `text` with confd's functions (the key functions read the store set
/// by [`funcs::with_store`]); the error is gtmpl's message on one line.
pub(crate) fn render_text(text: &str) -> Result<String, String> {
    let mut template = Template::default();
    template.add_funcs(&funcs::all());
    template.add_funcs(&rewrite::helpers());
    template
        .parse(rewrite::rewrite(text))
        .map_err(|e| super::error::one_line(&e.to_string(), 300))?;
    // confd executes its templates with nil data: `{{.}}` is `<no value>`.
    template
        .render(&Context::from(Value::NoValue))
        .map_err(|e| super::error::one_line(&e.to_string(), 300))
}

/// `check_cmd` with `{{.src}}` replaced by `stage`, as confd templates it.
pub(crate) fn check_command(command: &str, stage: &str) -> Result<String, String> {
    let mut data = std::collections::HashMap::new();
    data.insert("src".to_owned(), Value::from(stage));
    let mut template = Template::default();
    template
        .parse(command)
        .map_err(|e| super::error::one_line(&e.to_string(), 300))?;
    template
        .render(&Context::from(Value::Map(data)))
        .map_err(|e| super::error::one_line(&e.to_string(), 300))
}
