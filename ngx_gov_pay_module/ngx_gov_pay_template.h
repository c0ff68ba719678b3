
/*
 * Page templates: files that ops can restyle, read and compiled at
 * configuration time, filled on the request path without any I/O.
 *
 * Syntax (a small subset of Mustache, with no logic beyond sections):
 *
 *   {{name}}              the value, HTML-escaped (& < > " ')
 *   {{{name}}}            the value as is: only for what the module built
 *                         itself (the page content, the style sheet)
 *   {{#name}}...{{/name}} shown when name is a non-empty value; repeated
 *                         once per row when name is a list
 *   {{^name}}...{{/name}} shown when name is missing, empty or an empty list
 *   {{! comment }}        dropped
 *
 * A name not set renders as nothing.  The built-in templates are the files
 * of conf/templates/, embedded at build time; "gov_pay_templates <dir>;"
 * reads every one of them from <dir> instead (all must be there).
 */


#ifndef _NGX_GOV_PAY_TEMPLATE_H_INCLUDED_
#define _NGX_GOV_PAY_TEMPLATE_H_INCLUDED_


#include "ngx_gov_pay_module.h"


typedef struct ngx_http_gov_pay_tpl_s  ngx_http_gov_pay_tpl_t;


/* the values of one rendering: an ngx_array_t of these */

typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  value;
    ngx_array_t               *list;       /* of ngx_array_t *: rows */
} ngx_http_gov_pay_tvar_t;


/* configuration time */
char *ngx_http_gov_pay_templates_load(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf);

/* the compiled template of a file name ("cashier.html"), or NULL */
ngx_http_gov_pay_tpl_t *ngx_http_gov_pay_template(
    ngx_http_gov_pay_main_conf_t *gpmcf, const char *name);

/* the text of a template file taken as is ("style.css") */
ngx_str_t *ngx_http_gov_pay_template_text(
    ngx_http_gov_pay_main_conf_t *gpmcf, const char *name);

/* values */
ngx_array_t *ngx_http_gov_pay_tvars(ngx_pool_t *pool);
ngx_int_t ngx_http_gov_pay_tvar(ngx_array_t *vars, const char *name,
    ngx_str_t *value);
ngx_int_t ngx_http_gov_pay_tvar_cstr(ngx_array_t *vars, const char *name,
    const char *value);
/* a new row of the list "name" (the list is made on first use) */
ngx_array_t *ngx_http_gov_pay_tvar_row(ngx_array_t *vars, const char *name);

/* renders into a string on pool */
ngx_int_t ngx_http_gov_pay_template_render(ngx_pool_t *pool,
    ngx_http_gov_pay_tpl_t *tpl, ngx_array_t *vars, ngx_str_t *out);

/*
 * The whole page: the content template "name" rendered with vars, put
 * into layout.html with the title, the style sheet and the large-text mode
 * (长辈模式), and sent with the status.
 */
ngx_int_t ngx_http_gov_pay_render_page(ngx_http_request_t *r,
    ngx_uint_t status, const char *name, const char *title,
    ngx_array_t *vars);

/* HTML-escapes src (& < > " ') into dst on pool */
ngx_int_t ngx_http_gov_pay_html_escape(ngx_pool_t *pool, ngx_str_t *dst,
    const u_char *src, size_t len);


#endif /* _NGX_GOV_PAY_TEMPLATE_H_INCLUDED_ */
