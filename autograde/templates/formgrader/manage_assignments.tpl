{#- The formgrader's "Manage Assignments" page (autograde/formgrade.py puts this folder first).
    This course has no nbgrader exchange: assignments are released with `python -m autograde
    release`, submissions are copied into the working folder's submitted/ and graded with
    `python -m autograde grade`. nbgrader's page would warn on every visit that the exchange
    and the course id are missing; here it says how this course works instead. -#}
{%- extends "nbgrader/manage_assignments.tpl" -%}
{%- set exchange_missing = false -%}
{%- set course_id = "(no exchange)" -%}
{%- block messages -%}
{{ super() }}
<div class="alert alert-info" id="loralab-no-exchange">
This course does not use nbgrader's exchange, so the release and collect buttons do nothing
useful here. Release with <code>python -m autograde release</code>, put each student's notebook
in <code>submitted/STUDENT/ASSIGNMENT/</code> of the course's working folder, and grade with
<code>python -m autograde grade ASSIGNMENT</code> (see autograde/README.md). Written answers are
graded here: <b>Manual Grading</b>, then a submission; each answer shows its model answer and
rubric.
</div>
{%- endblock -%}
